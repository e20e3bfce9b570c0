//! The graph around an ensemble: which input feeds it, and how each graph output follows
//! from its outputs through the nodes converters put there (`Identity`, `Cast` to the same
//! type or int64 to float, `Mul`/`Add` by a float scalar). Any other node makes the model
//! [`Unsupported`].

use std::collections::HashMap;

use super::Unsupported;
use super::eval::{NativeOutput, Outputs};
use crate::model::onnx::{OnnxError, ProtoReader};
use crate::score::tree_order::{Node, read_node};

/// ONNX `TensorProto.DataType` codes this reader needs.
const FLOAT: i64 = 1;
const INT64: i64 = 7;

/// What happens to an ensemble output on its way to a graph output.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    MulBy(f32),
    Add(f32),
    Int64ToFloat,
    /// A `Cast` of an int64 label to int64: nothing to do.
    KeepInt64,
}

/// A graph output: which ensemble output (0 label / 1 scores, or 0 for a regressor's `Y`)
/// and the steps after it.
#[derive(Debug)]
struct GraphOutput {
    name: String,
    from: usize,
    steps: Vec<Step>,
}

/// The model's graph as the evaluator reads it.
#[derive(Debug)]
pub(super) struct Graph {
    /// The graph input the ensemble reads.
    pub input: String,
    /// The ensemble node, its attributes and op type.
    pub ensemble: Node,
    outputs: Vec<GraphOutput>,
}

/// The parts of a `GraphProto` the evaluator needs.
#[derive(Default)]
struct RawGraph {
    nodes: Vec<Node>,
    /// Graph inputs with their element type.
    inputs: Vec<(String, i64)>,
    outputs: Vec<String>,
    /// Scalar float initializers (`one` for the `Mul` LightGBM's converter adds).
    scalars: HashMap<String, f32>,
    initializers: Vec<String>,
}

fn unsupported(why: impl Into<String>) -> Unsupported {
    Unsupported(why.into())
}

impl Graph {
    pub fn read(bytes: &[u8]) -> Result<Self, Unsupported> {
        let raw = read_model(bytes).map_err(|e| unsupported(format!("cannot read: {e}")))?;
        let mut ensembles = raw.nodes.iter().filter(|n| n.is_ensemble());
        let (Some(ensemble), None) = (ensembles.next(), ensembles.next()) else {
            return Err(unsupported(
                "the graph has no tree ensemble, or more than one",
            ));
        };
        for n in &raw.nodes {
            let known = std::ptr::eq(n, ensemble)
                || (n.domain.is_empty()
                    && matches!(n.op_type.as_str(), "Identity" | "Cast" | "Mul" | "Add"));
            if !known {
                return Err(unsupported(format!(
                    "its graph has a {} node, which the native evaluator does not follow",
                    n.op_type
                )));
            }
        }
        let input = ensemble_input(&raw, ensemble)?;
        let outputs = raw
            .outputs
            .iter()
            .map(|name| trace_output(&raw, ensemble, name))
            .collect::<Result<Vec<_>, _>>()?;
        // ONNX Runtime scores a `TreeEnsemble` as the older operators it converts it to.
        let ensemble = if ensemble.op_type == "TreeEnsemble" {
            super::v5::to_v3(ensemble)?
        } else {
            ensemble.clone()
        };
        Ok(Self {
            input,
            ensemble,
            outputs,
        })
    }

    /// The graph's outputs from the ensemble's (`raw[i]` for its output `i`).
    pub fn finish(&self, raw: Vec<NativeOutput>) -> Outputs {
        self.outputs
            .iter()
            .map(|o| {
                let mut value = raw[o.from].clone();
                for step in &o.steps {
                    value = apply(*step, value);
                }
                (o.name.clone(), value)
            })
            .collect()
    }
}

fn apply(step: Step, value: NativeOutput) -> NativeOutput {
    match (step, value) {
        (Step::MulBy(c), NativeOutput::Float32 { values, per_row }) => NativeOutput::Float32 {
            values: values.into_iter().map(|v| v * c).collect(),
            per_row,
        },
        (Step::Add(c), NativeOutput::Float32 { values, per_row }) => NativeOutput::Float32 {
            values: values.into_iter().map(|v| v + c).collect(),
            per_row,
        },
        (Step::Int64ToFloat, NativeOutput::Int64(values)) => NativeOutput::Float32 {
            values: values.into_iter().map(|v| v as f32).collect(),
            per_row: 1,
        },
        // `trace_output` only builds steps that fit the value's type.
        (_, other) => other,
    }
}

/// The graph input that reaches the ensemble through `Identity` and float-to-float `Cast`s.
fn ensemble_input(raw: &RawGraph, ensemble: &Node) -> Result<String, Unsupported> {
    let mut name = ensemble.inputs.first().cloned().unwrap_or_default();
    for _ in 0..16 {
        if let Some((input, elem)) = raw.inputs.iter().find(|(n, _)| *n == name) {
            if *elem != FLOAT {
                return Err(unsupported(format!(
                    "its input {input:?} is not float32 (ONNX type {elem})"
                )));
            }
            return Ok(input.clone());
        }
        let producer = raw.nodes.iter().find(|n| n.outputs.first() == Some(&name));
        match producer {
            Some(n) if n.op_type == "Identity" || is_cast_to(n, FLOAT) => {
                name = n.inputs.first().cloned().unwrap_or_default();
            }
            _ => break,
        }
    }
    Err(unsupported(
        "its ensemble's input does not come from a float32 graph input",
    ))
}

fn is_cast_to(n: &Node, to: i64) -> bool {
    n.op_type == "Cast" && n.ints.get("to").and_then(|v| v.first()) == Some(&to)
}

/// How graph output `name` follows from an ensemble output, walking back to it.
fn trace_output(raw: &RawGraph, ensemble: &Node, name: &str) -> Result<GraphOutput, Unsupported> {
    let mut steps = Vec::new();
    let mut current = name.to_string();
    for _ in 0..32 {
        if let Some(from) = ensemble.outputs.iter().position(|o| *o == current) {
            steps.reverse();
            return check_types(ensemble, name, from, steps);
        }
        let Some(n) = raw
            .nodes
            .iter()
            .find(|n| n.outputs.first() == Some(&current))
        else {
            break;
        };
        match n.op_type.as_str() {
            "Identity" => {}
            "Cast" if is_cast_to(n, FLOAT) => steps.push(Step::Int64ToFloat),
            "Cast" if is_cast_to(n, INT64) => steps.push(Step::KeepInt64),
            "Mul" | "Add" => {
                let (data, constant) = scalar_operand(raw, n)?;
                steps.push(if n.op_type == "Mul" {
                    Step::MulBy(constant)
                } else {
                    Step::Add(constant)
                });
                current = data;
                continue;
            }
            _ => {
                return Err(unsupported(format!(
                    "its output {name:?} passes through a {} it does not follow",
                    n.op_type
                )));
            }
        }
        current = n.inputs.first().cloned().unwrap_or_default();
    }
    Err(unsupported(format!(
        "its output {name:?} does not come from the ensemble"
    )))
}

/// `Mul(x, c)` or `Mul(c, x)` with `c` a float scalar initializer: (x, c).
fn scalar_operand(raw: &RawGraph, n: &Node) -> Result<(String, f32), Unsupported> {
    let [a, b] = n.inputs.as_slice() else {
        return Err(unsupported(format!(
            "a {} node without two inputs",
            n.op_type
        )));
    };
    match (raw.scalars.get(a), raw.scalars.get(b)) {
        (None, Some(&c)) => Ok((a.clone(), c)),
        (Some(&c), None) => Ok((b.clone(), c)),
        _ => Err(unsupported(format!(
            "a {} node whose operand is not a float scalar constant",
            n.op_type
        ))),
    }
}

/// Which steps fit which output: casts of labels, arithmetic on scores. Casting an int64
/// label to int64 is dropped; other casts are refused.
fn check_types(
    ensemble: &Node,
    name: &str,
    from: usize,
    steps: Vec<Step>,
) -> Result<GraphOutput, Unsupported> {
    let is_label = ensemble.op_type == "TreeEnsembleClassifier" && from == 0;
    let string_labels = ensemble.strings.contains_key("classlabels_strings");
    let mut float = !is_label;
    for step in &steps {
        let fits = match step {
            Step::Int64ToFloat => !float && !string_labels,
            Step::KeepInt64 => !float && !string_labels,
            Step::MulBy(_) | Step::Add(_) => float,
        };
        if !fits {
            return Err(unsupported(format!(
                "its output {name:?} takes a step ({step:?}) the evaluator does not follow"
            )));
        }
        if *step == Step::Int64ToFloat {
            float = true;
        }
    }
    Ok(GraphOutput {
        name: name.to_string(),
        from,
        steps,
    })
}

/// Reads `ModelProto.graph` (7): nodes (1), initializers (5), inputs (11), outputs (12).
fn read_model(bytes: &[u8]) -> Result<RawGraph, OnnxError> {
    let mut model = ProtoReader::new(bytes);
    let mut raw = RawGraph::default();
    while !model.done() {
        match model.key()? {
            (7, 2) => {
                let mut graph = ProtoReader::new(model.bytes()?);
                while !graph.done() {
                    match graph.key()? {
                        (1, 2) => raw.nodes.push(read_node(graph.bytes()?)?),
                        (5, 2) => read_initializer(graph.bytes()?, &mut raw)?,
                        (11, 2) => raw.inputs.push(read_value_info(graph.bytes()?)?),
                        (12, 2) => raw.outputs.push(read_value_info(graph.bytes()?)?.0),
                        (_, w) => graph.skip(w)?,
                    }
                }
            }
            (_, w) => model.skip(w)?,
        }
    }
    // Old models list initializers among the inputs too.
    raw.inputs.retain(|(n, _)| !raw.initializers.contains(n));
    Ok(raw)
}

/// A `ValueInfoProto`'s name (1) and its tensor element type (type 2 > tensor_type 1 >
/// elem_type 1); 0 when it has none.
fn read_value_info(bytes: &[u8]) -> Result<(String, i64), OnnxError> {
    let mut r = ProtoReader::new(bytes);
    let (mut name, mut elem) = (String::new(), 0);
    while !r.done() {
        match r.key()? {
            (1, 2) => name = r.string()?,
            (2, 2) => {
                let mut t = ProtoReader::new(r.bytes()?);
                while !t.done() {
                    match t.key()? {
                        (1, 2) => {
                            let mut tensor = ProtoReader::new(t.bytes()?);
                            while !tensor.done() {
                                match tensor.key()? {
                                    (1, 0) => elem = tensor.varint()? as i64,
                                    (_, w) => tensor.skip(w)?,
                                }
                            }
                        }
                        (_, w) => t.skip(w)?,
                    }
                }
            }
            (_, w) => r.skip(w)?,
        }
    }
    Ok((name, elem))
}

/// A `TensorProto`: dims (1), data_type (2), float_data (4), name (8), raw_data (9). Keeps
/// float tensors of one element as scalars.
fn read_initializer(bytes: &[u8], raw: &mut RawGraph) -> Result<(), OnnxError> {
    let mut r = ProtoReader::new(bytes);
    let (mut name, mut dtype, mut count, mut values) = (String::new(), 0, 1u64, Vec::new());
    while !r.done() {
        match r.key()? {
            (1, 0) => count = count.saturating_mul(r.varint()?),
            (1, 2) => {
                let mut packed = ProtoReader::new(r.bytes()?);
                while !packed.done() {
                    count = count.saturating_mul(packed.varint()?);
                }
            }
            (2, 0) => dtype = r.varint()? as i64,
            (4, 5) => values.push(f32::from_bits(r.fixed32()?)),
            (4, 2) => {
                let mut packed = ProtoReader::new(r.bytes()?);
                while !packed.done() {
                    values.push(f32::from_bits(packed.fixed32()?));
                }
            }
            (8, 2) => name = r.string()?,
            (9, 2) => {
                for chunk in r.bytes()?.chunks_exact(4) {
                    values.push(f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]));
                }
            }
            (_, w) => r.skip(w)?,
        }
    }
    if dtype == FLOAT && count == 1 && values.len() == 1 {
        raw.scalars.insert(name.clone(), values[0]);
    }
    raw.initializers.push(name);
    Ok(())
}

//! The native tree-ensemble evaluator (`batchscore::score::trees`) against ONNX Runtime itself.
//!
//! The evaluator's promise is identity, not closeness: every output of every model, bit for
//! bit, as ONNX Runtime's CPU kernel computes it with one intra-op thread (the code path each
//! scoring session takes). So every comparison here is on `f32::to_bits` (NaN payloads
//! included) and on labels exactly, and the oracle is the same ONNX Runtime library the runs
//! load, fed the same model bytes and the same float32 rows.
//!
//! The models are the sample ones on their own data, and hundreds of ensembles built here as
//! ONNX protobuf bytes from a seeded generator, to reach the cases converters rarely write
//! (every node mode, ids out of order, NaN and infinities, equal thresholds, odd base values).
//! A failure names the model's seed: `TREES_SEED=<seed> cargo test --features test-hooks
//! --test trees random` rebuilds that one model (and `TREES_WRAP=plain|lgbm|affine` puts it in
//! another graph, to tell the ensemble from the nodes after it); its bytes are left in the
//! target's tmp dir. `TREES_MODELS=<n>` draws more models than the default 300.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use batchscore::model::{ElemType, ExecutionDevice, IoKind, Model};
use batchscore::score::trees::{NativeEnsemble, NativeOutput};
use common::{Cell, read_parquet, sample};

// ---------------------------------------------------------------------------------------------
// The oracle: ONNX Runtime, one thread
// ---------------------------------------------------------------------------------------------

/// One graph output as either side computed it, normalised so the two compare.
#[derive(Debug, Clone)]
enum Out {
    Int64(Vec<i64>),
    Strings(Vec<String>),
    Float32 { values: Vec<f32>, per_row: usize },
}

impl Out {
    fn from_native(o: NativeOutput) -> Self {
        match o {
            NativeOutput::Int64(v) => Out::Int64(v),
            NativeOutput::Strings(v) => Out::Strings(v),
            NativeOutput::Float32 { values, per_row } => Out::Float32 { values, per_row },
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Out::Int64(_) => "int64",
            Out::Strings(_) => "string",
            Out::Float32 { .. } => "float32",
        }
    }
}

/// A model opened in ONNX Runtime the way a run opens it (same optimisation level, one
/// intra-op thread on the CPU), with its outputs' names and types in graph order.
struct Oracle {
    session: ort::session::Session,
    input: String,
    /// Tensor outputs have their element type; others (a ZipMap's maps) have none.
    outputs: Vec<(String, Option<ElemType>)>,
    _file: tempfile::NamedTempFile,
}

impl Oracle {
    fn open(bytes: &[u8]) -> Result<Self, String> {
        batchscore::model::init_runtime(None).map_err(|e| e.to_string())?;
        let file = tempfile::Builder::new().suffix(".onnx").tempfile().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        let model = Model::open(&file.path().to_string_lossy(), None).map_err(|e| e.to_string())?;
        let outputs = model
            .outputs
            .iter()
            .map(|o| match &o.kind {
                IoKind::Tensor { dtype, .. } => (o.name.clone(), Some(*dtype)),
                _ => (o.name.clone(), None),
            })
            .collect();
        let input = model.inputs[0].name.clone();
        // One intra-op thread: ONNX Runtime's multi-threaded kernel sums trees in another order.
        let session = model
            .new_session(1, ExecutionDevice::Cpu)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            session,
            input,
            outputs,
            _file: file,
        })
    }

    fn run(&mut self, x: &[f32], rows: usize, width: usize) -> Result<Vec<(String, Out)>, String> {
        let tensor = ort::value::Tensor::from_array((vec![rows as i64, width as i64], x.to_vec()))
            .map_err(|e| e.to_string())?;
        let outs = self
            .session
            .run(ort::inputs![self.input.as_str() => tensor])
            .map_err(|e| e.to_string())?;
        let mut got = Vec::new();
        for (name, elem) in &self.outputs {
            // Not compared: a model with such an output is one the evaluator must refuse, and
            // the missing name then shows as a difference.
            let Some(elem) = elem else { continue };
            let v = outs
                .get(name.as_str())
                .ok_or_else(|| format!("ONNX Runtime returned no {name}"))?;
            let out = match elem {
                ElemType::Float32 => {
                    let (shape, data) = v.try_extract_tensor::<f32>().map_err(|e| e.to_string())?;
                    let per_row = if shape.len() >= 2 {
                        shape[1..].iter().product::<i64>() as usize
                    } else {
                        1
                    };
                    Out::Float32 {
                        values: data.to_vec(),
                        per_row,
                    }
                }
                ElemType::Int64 => Out::Int64(
                    v.try_extract_tensor::<i64>()
                        .map_err(|e| e.to_string())?
                        .1
                        .to_vec(),
                ),
                ElemType::String => {
                    Out::Strings(v.try_extract_strings().map_err(|e| e.to_string())?.1)
                }
                other => return Err(format!("output {name} has type {other:?}")),
            };
            got.push((name.clone(), out));
        }
        Ok(got)
    }
}

/// How one model fared.
enum Verdict {
    /// Every output identical at every row count, scored with this layout
    /// (`NativeEnsemble::layout`).
    Identical(&'static str),
    /// `from_onnx` declined it (ONNX Runtime scores it instead).
    Refused(String),
}

/// Scores the first `n` rows of `x` for each `n` in `row_counts`, natively and in ONNX
/// Runtime, and says how the first difference looks, with `about` (the model) in front.
fn compare_model(
    about: &str,
    bytes: &[u8],
    x: &[f32],
    width: usize,
    row_counts: &[usize],
) -> Result<Verdict, String> {
    compare_model_except(about, bytes, x, width, row_counts, None)
}

/// [`compare_model`], but for `unwritten`, an output's column that ONNX Runtime leaves
/// unwritten (its value is whatever the memory held), compared on neither side.
fn compare_model_except(
    about: &str,
    bytes: &[u8],
    x: &[f32],
    width: usize,
    row_counts: &[usize],
    unwritten: Option<(&str, usize)>,
) -> Result<Verdict, String> {
    let mut oracle =
        Oracle::open(bytes).map_err(|e| format!("{about}\nONNX Runtime cannot open it: {e}"))?;
    let mut native = match NativeEnsemble::from_onnx(bytes) {
        Ok(n) => n,
        Err(e) => return Ok(Verdict::Refused(e.0)),
    };
    if native.input_name() != oracle.input {
        return Err(format!(
            "{about}\ninput name: native {:?}, graph {:?}",
            native.input_name(),
            oracle.input
        ));
    }
    if native.n_features() > width {
        return Err(format!(
            "{about}\nn_features {} exceeds the input's {width} columns",
            native.n_features()
        ));
    }
    for &rows in row_counts {
        let x = &x[..rows * width];
        let mut want = oracle
            .run(x, rows, width)
            .map_err(|e| format!("{about}\nONNX Runtime failed on {rows} rows: {e}"))?;
        zero_column(&mut want, unwritten);
        // The node walk by blocks has two ways down the trees (AVX2 gathers where the CPU
        // has them, and the scalar walk): each must reach ONNX Runtime's leaves.
        for gathers in [true, false] {
            native.set_gathers(gathers);
            let mut got: Vec<(String, Out)> = native
                .predict(x, rows)
                .into_iter()
                .map(|(n, o)| (n, Out::from_native(o)))
                .collect();
            zero_column(&mut got, unwritten);
            if let Some((row, text)) = first_difference(&got, &want, rows) {
                let mut msg =
                    format!("{about}\nat {rows} rows (AVX2 gathers allowed: {gathers}): {text}");
                if let Some(r) = row {
                    let _ = write!(
                        msg,
                        "\nrow {r} features: {}",
                        show_row(&x[r * width..][..width])
                    );
                }
                return Err(msg);
            }
        }
    }
    // The layout with gathers allowed: where the CPU has AVX2, the node walk by blocks names
    // the AVX2 walk, which the random test then requires as it does every layout.
    native.set_gathers(true);
    Ok(Verdict::Identical(native.layout()))
}

/// Zeroes `unwritten`'s column (an output's column ONNX Runtime leaves unwritten), if any.
fn zero_column(outputs: &mut [(String, Out)], unwritten: Option<(&str, usize)>) {
    let Some((output, col)) = unwritten else {
        return;
    };
    for (name, out) in outputs {
        if let Out::Float32 { values, per_row } = out
            && name == output
            && col < *per_row
        {
            values
                .iter_mut()
                .skip(col)
                .step_by(*per_row)
                .for_each(|v| *v = 0.0);
        }
    }
}

/// The first way `got` (native) differs from `want` (ONNX Runtime), with its row if it has one.
fn first_difference(
    got: &[(String, Out)],
    want: &[(String, Out)],
    rows: usize,
) -> Option<(Option<usize>, String)> {
    let names = |v: &[(String, Out)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    if names(got) != names(want) {
        return Some((
            None,
            format!(
                "outputs: native {:?}, ONNX Runtime {:?}",
                names(got),
                names(want)
            ),
        ));
    }
    for ((name, g), (_, w)) in got.iter().zip(want) {
        match (g, w) {
            (Out::Int64(g), Out::Int64(w)) => {
                if g.len() != rows || w.len() != rows {
                    return Some((
                        None,
                        format!(
                            "{name}: {} native labels, {} ONNX Runtime, {rows} rows",
                            g.len(),
                            w.len()
                        ),
                    ));
                }
                if let Some(r) = (0..rows).find(|&r| g[r] != w[r]) {
                    return Some((
                        Some(r),
                        format!("{name}[{r}]: native {}, ONNX Runtime {}", g[r], w[r]),
                    ));
                }
            }
            (Out::Strings(g), Out::Strings(w)) => {
                if g.len() != rows || w.len() != rows {
                    return Some((
                        None,
                        format!(
                            "{name}: {} native labels, {} ONNX Runtime, {rows} rows",
                            g.len(),
                            w.len()
                        ),
                    ));
                }
                if let Some(r) = (0..rows).find(|&r| g[r] != w[r]) {
                    return Some((
                        Some(r),
                        format!("{name}[{r}]: native {:?}, ONNX Runtime {:?}", g[r], w[r]),
                    ));
                }
            }
            (
                Out::Float32 {
                    values: g,
                    per_row: gp,
                },
                Out::Float32 {
                    values: w,
                    per_row: wp,
                },
            ) => {
                let (gp, wp) = (*gp, *wp);
                if gp != wp || g.len() != w.len() || w.len() != rows * wp {
                    return Some((
                        None,
                        format!(
                            "{name}: native {} values ({gp} a row), ONNX Runtime {} ({wp} a row), {rows} rows",
                            g.len(),
                            w.len()
                        ),
                    ));
                }
                let differs = |i: &usize| g[*i].to_bits() != w[*i].to_bits();
                let nan_only = |i: &usize| g[*i].is_nan() && w[*i].is_nan();
                // A real difference first; NaN against NaN with other bits only if that is
                // all there is (the message says so: it is a difference in the files too).
                let first = (0..w.len())
                    .find(|i| differs(i) && !nan_only(i))
                    .or_else(|| (0..w.len()).find(differs));
                if let Some(i) = first {
                    let (r, c) = (i / wp, i % wp);
                    let count = (0..w.len()).filter(differs).count();
                    let note = if nan_only(&i) {
                        " (both NaN, other bits; every difference in this output is of that kind)"
                    } else {
                        ""
                    };
                    let row_g: Vec<String> =
                        g[r * wp..][..wp].iter().map(|v| show_f32(*v)).collect();
                    let row_w: Vec<String> =
                        w[r * wp..][..wp].iter().map(|v| show_f32(*v)).collect();
                    return Some((
                        Some(r),
                        format!(
                            "{name}[{r}][{c}]: native {}, ONNX Runtime {}{note}; {count} of {} values differ\n  native row {:?}\n  ORT row    {:?}",
                            show_f32(g[i]),
                            show_f32(w[i]),
                            w.len(),
                            row_g,
                            row_w
                        ),
                    ));
                }
            }
            (g, w) => {
                return Some((
                    None,
                    format!(
                        "{name}: native gives {}, ONNX Runtime {}",
                        g.kind(),
                        w.kind()
                    ),
                ));
            }
        }
    }
    None
}

fn show_f32(v: f32) -> String {
    format!("{v:e} ({:#010x})", v.to_bits())
}

fn show_row(row: &[f32]) -> String {
    row.iter()
        .map(|v| show_f32(*v))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where a failing model's bytes are left for the lead to load elsewhere.
fn keep_model(name: &str, bytes: &[u8]) -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::write(&p, bytes);
    p
}

// ---------------------------------------------------------------------------------------------
// A seeded generator (no dependency: failures must reproduce from a printed seed)
// ---------------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// splitmix64.
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Inclusive.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Roughly standard normal (Irwin-Hall): enough to spread values, exact to reproduce.
    fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.unit()).sum::<f64>() - 6.0
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ONNX protobuf, written by hand (the wire format is small; the crate has no ONNX writer)
// ---------------------------------------------------------------------------------------------

#[derive(Default, Clone)]
struct Pb(Vec<u8>);

impl Pb {
    fn raw_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.raw_varint(((field as u64) << 3) | wire as u64);
    }

    fn int(mut self, field: u32, v: i64) -> Self {
        self.key(field, 0);
        self.raw_varint(v as u64);
        self
    }

    fn bytes(mut self, field: u32, b: &[u8]) -> Self {
        self.key(field, 2);
        self.raw_varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }

    fn str(self, field: u32, s: &str) -> Self {
        self.bytes(field, s.as_bytes())
    }

    fn msg(self, field: u32, m: Pb) -> Self {
        self.bytes(field, &m.0)
    }

    fn float(mut self, field: u32, v: f32) -> Self {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn floats(mut self, field: u32, v: &[f32], packed: bool) -> Self {
        if packed {
            let b: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
            return self.bytes(field, &b);
        }
        for f in v {
            self = self.float(field, *f);
        }
        self
    }

    fn ints(mut self, field: u32, v: &[i64], packed: bool) -> Self {
        if packed {
            let mut b = Pb::default();
            for i in v {
                b.raw_varint(*i as u64);
            }
            return self.bytes(field, &b.0);
        }
        for i in v {
            self = self.int(field, *i);
        }
        self
    }
}

#[derive(Clone)]
enum Attr {
    Int(i64),
    Str(String),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Strings(Vec<String>),
    /// A float32 tensor (`AttributeProto.t`), as `float_data` or, packed, `raw_data`.
    FloatTensor(Vec<f32>),
    /// A uint8 tensor, as `int32_data` or, packed, `raw_data`.
    U8Tensor(Vec<u8>),
}

/// A rank-1 `TensorProto` of `values` (ONNX type `elem`): typed field `typed`, or `raw_data`.
fn tensor_proto(elem: i64, len: usize, typed: Pb, raw: Option<Vec<u8>>) -> Pb {
    let p = Pb::default().int(1, len as i64).int(2, elem);
    match raw {
        Some(b) => p.bytes(9, &b),
        None => Pb(p.0.into_iter().chain(typed.0).collect()),
    }
}

fn attribute(name: &str, a: &Attr, packed: bool) -> Pb {
    let p = Pb::default().str(1, name);
    match a {
        Attr::Int(i) => p.int(3, *i).int(20, 2),
        Attr::Str(s) => p.str(4, s).int(20, 3),
        Attr::Floats(v) => p.floats(7, v, packed).int(20, 6),
        Attr::Ints(v) => p.ints(8, v, packed).int(20, 7),
        Attr::Strings(v) => v.iter().fold(p, |p, s| p.str(9, s)).int(20, 8),
        Attr::FloatTensor(v) => {
            let raw = packed.then(|| v.iter().flat_map(|f| f.to_le_bytes()).collect());
            let typed = Pb::default().floats(4, v, true);
            p.msg(5, tensor_proto(FLOAT, v.len(), typed, raw))
                .int(20, 4)
        }
        Attr::U8Tensor(v) => {
            let ints: Vec<i64> = v.iter().map(|&b| i64::from(b)).collect();
            let typed = Pb::default().ints(5, &ints, true);
            p.msg(
                5,
                tensor_proto(UINT8, v.len(), typed, packed.then(|| v.clone())),
            )
            .int(20, 4)
        }
    }
}

fn node(
    op: &str,
    domain: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: &[(&str, Attr)],
    packed: bool,
) -> Pb {
    let mut p = Pb::default();
    for i in inputs {
        p = p.str(1, i);
    }
    for o in outputs {
        p = p.str(2, o);
    }
    p = p.str(3, &format!("{op}_{}", outputs[0])).str(4, op);
    for (n, a) in attrs {
        p = p.msg(5, attribute(n, a, packed));
    }
    if !domain.is_empty() {
        p = p.str(7, domain);
    }
    p
}

const FLOAT: i64 = 1;
const UINT8: i64 = 2;
const INT64: i64 = 7;
const STRING: i64 = 8;
const DOUBLE: i64 = 11;

/// A dimension: `None` for the batch's symbolic `N`.
fn tensor_type(elem: i64, dims: &[Option<i64>]) -> Pb {
    let mut shape = Pb::default();
    for d in dims {
        let dim = match d {
            Some(v) => Pb::default().int(1, *v),
            None => Pb::default().str(2, "N"),
        };
        shape = shape.msg(1, dim);
    }
    Pb::default().msg(1, Pb::default().int(1, elem).msg(2, shape))
}

fn value_info(name: &str, ty: Pb) -> Pb {
    Pb::default().str(1, name).msg(2, ty)
}

/// A float initializer of `dims` (empty: a scalar), as `float_data` or `raw_data`.
fn float_initializer(name: &str, dims: &[i64], values: &[f32], raw: bool) -> Pb {
    let mut p = Pb::default();
    for d in dims {
        p = p.int(1, *d);
    }
    p = p.int(2, FLOAT);
    p = if raw {
        let b: Vec<u8> = values.iter().flat_map(|f| f.to_le_bytes()).collect();
        p.str(8, name).bytes(9, &b)
    } else {
        p.floats(4, values, true).str(8, name)
    };
    p
}

fn model_bytes(graph: Pb, ml_opset: i64) -> Vec<u8> {
    let opset = |domain: &str, v: i64| {
        let p = Pb::default();
        let p = if domain.is_empty() {
            p
        } else {
            p.str(1, domain)
        };
        p.int(2, v)
    };
    Pb::default()
        .int(1, 8)
        .str(2, "batchscore-tests")
        .msg(7, graph)
        .msg(8, opset("", 17))
        .msg(8, opset("ai.onnx.ml", ml_opset))
        .0
}

fn graph(name: &str, nodes: Vec<Pb>, inits: Vec<Pb>, inputs: Vec<Pb>, outputs: Vec<Pb>) -> Pb {
    let mut g = Pb::default();
    for n in nodes {
        g = g.msg(1, n);
    }
    g = g.str(2, name);
    for i in inits {
        g = g.msg(5, i);
    }
    for i in inputs {
        g = g.msg(11, i);
    }
    for o in outputs {
        g = g.msg(12, o);
    }
    g
}

// ---------------------------------------------------------------------------------------------
// Random ensembles
// ---------------------------------------------------------------------------------------------

const MODES: [&str; 6] = [
    "BRANCH_LEQ",
    "BRANCH_LT",
    "BRANCH_GTE",
    "BRANCH_GT",
    "BRANCH_EQ",
    "BRANCH_NEQ",
];

#[derive(Debug, Clone)]
enum Labels {
    Ints(Vec<i64>),
    Strings(Vec<String>),
}

impl Labels {
    fn len(&self) -> usize {
        match self {
            Labels::Ints(v) => v.len(),
            Labels::Strings(v) => v.len(),
        }
    }
}

/// How the leaves of a classifier carry their weights.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Weights {
    /// Two labels, weights for class 0 only (LightGBM, XGBoost), of either sign.
    BinaryOneMixed,
    /// Two labels, weights for class 0 only, all in [0, 1].
    BinaryOnePositive,
    /// Two labels, a weight for each (scikit-learn's forests).
    BinaryBoth,
    /// A weight for every class at every leaf (forests).
    EveryClass,
    /// Tree `t` scores class `t % k` only (gradient boosting).
    RoundRobin,
}

#[derive(Debug, Clone)]
enum Kind {
    Classifier {
        labels: Labels,
        weights: Weights,
    },
    Regressor {
        n_targets: usize,
        aggregate: &'static str,
    },
}

/// What surrounds the ensemble in the graph.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Wrap {
    /// The ensemble's outputs are the graph's.
    Plain,
    /// onnxmltools' LightGBM graph: `Identity`s, a `Cast` of the label, a `Mul` by 1.
    Lgbm,
    /// `Mul` by a scalar then `Add` of one; int labels also cast to float; outputs reversed.
    Affine,
}

#[derive(Debug, Clone)]
struct TreeNode {
    tree: i64,
    id: i64,
    mode: &'static str,
    feature: i64,
    value: f32,
    t: i64,
    f: i64,
    missing_true: i64,
}

struct Spec {
    seed: u64,
    kind: Kind,
    post_transform: &'static str,
    base_values: Vec<f32>,
    nodes: Vec<TreeNode>,
    /// (tree, node, class or target, weight), in the order the attribute lists them.
    weights: Vec<(i64, i64, i64, f32)>,
    n_trees: usize,
    n_features: usize,
    /// Columns of the input (`n_features` or more: unread columns are allowed).
    width: usize,
    wrap: Wrap,
    packed: bool,
    missing_attr: bool,
    ml_opset: i64,
    mode_style: &'static str,
    shuffled_ids: bool,
    dup_weights: bool,
    empty_leaves: bool,
    /// Values the thresholds come from, per feature; the inputs reuse them.
    pools: Vec<Vec<f32>>,
}

impl Spec {
    fn describe(&self) -> String {
        let kind = match &self.kind {
            Kind::Classifier { labels, weights } => {
                format!("TreeEnsembleClassifier labels {labels:?} weights {weights:?}")
            }
            Kind::Regressor {
                n_targets,
                aggregate,
            } => {
                format!("TreeEnsembleRegressor n_targets {n_targets} aggregate {aggregate}")
            }
        };
        format!(
            "seed {:#x}: {kind}, post_transform {}, base_values {:?}, {} trees, {} nodes, modes {}, \
             ids {}, missing_value_tracks_true {}, duplicate leaf weights {}, leaves without weights {}, {} features in {} \
             columns, graph {:?}, {} attributes, ai.onnx.ml v{}",
            self.seed,
            self.post_transform,
            self.base_values,
            self.n_trees,
            self.nodes.len(),
            self.mode_style,
            if self.shuffled_ids {
                "shuffled"
            } else {
                "in order"
            },
            if self.missing_attr {
                "random"
            } else {
                "absent"
            },
            self.dup_weights,
            self.empty_leaves,
            self.n_features,
            self.width,
            self.wrap,
            if self.packed { "packed" } else { "unpacked" },
            self.ml_opset,
        )
    }
}

fn random_spec(seed: u64) -> Spec {
    let mut rng = Rng::new(seed);
    let n_features = rng.range(1, 12);
    let width = n_features + if rng.chance(0.2) { rng.range(1, 3) } else { 0 };

    // Thresholds on a coarse grid so that inputs land on them exactly (the equality cases),
    // plus the signed zeros and, rarely, the infinities.
    let pools: Vec<Vec<f32>> = (0..width)
        .map(|_| {
            let scale = rng.pick(&[0.01, 1.0, 1.0, 30.0, 1e4]);
            let grid = rng.pick(&[0.25, 1.0, 0.0]);
            let mut p: Vec<f32> = (0..rng.range(2, 16))
                .map(|_| {
                    let v = rng.normal() * scale;
                    if grid > 0.0 {
                        ((v / grid).round() * grid) as f32
                    } else {
                        v as f32
                    }
                })
                .collect();
            if rng.chance(0.3) {
                p.push(0.0);
                p.push(-0.0);
            }
            if rng.chance(0.05) {
                p.push(f32::INFINITY);
            }
            if rng.chance(0.05) {
                p.push(f32::NEG_INFINITY);
            }
            p
        })
        .collect();

    let (kind, n_out) = if rng.chance(0.65) {
        let weights = rng.pick(&[
            Weights::BinaryOneMixed,
            Weights::BinaryOneMixed,
            Weights::BinaryOnePositive,
            Weights::BinaryBoth,
            Weights::EveryClass,
            Weights::RoundRobin,
        ]);
        let k = match weights {
            Weights::BinaryOneMixed | Weights::BinaryOnePositive | Weights::BinaryBoth => 2,
            _ => rng.range(3, 5),
        };
        let labels = if rng.chance(0.3) {
            let names = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"];
            Labels::Strings(names[..k].iter().map(|s| s.to_string()).collect())
        } else if rng.chance(0.5) {
            Labels::Ints((0..k as i64).collect())
        } else {
            // Non-contiguous, as `[3, 7, 9]`: the label is the class's value, not its index.
            let mut v = Vec::new();
            let mut at = rng.range(0, 5) as i64 - 2;
            for _ in 0..k {
                v.push(at);
                at += rng.range(1, 4) as i64;
            }
            Labels::Ints(v)
        };
        (Kind::Classifier { labels, weights }, k)
    } else {
        let n_targets = rng.pick(&[1, 1, 2, 3]);
        let aggregate = rng.pick(&["SUM", "SUM", "AVERAGE", "MIN", "MAX"]);
        (
            Kind::Regressor {
                n_targets,
                aggregate,
            },
            n_targets,
        )
    };

    let post_transform = match &kind {
        Kind::Classifier { .. } => rng.pick(&["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"]),
        Kind::Regressor { n_targets: 1, .. } => rng.pick(&["NONE", "NONE", "NONE", "PROBIT"]),
        Kind::Regressor { .. } => "NONE",
    };
    let base_values: Vec<f32> = {
        let len = match &kind {
            Kind::Classifier {
                weights: Weights::BinaryOneMixed | Weights::BinaryOnePositive | Weights::BinaryBoth,
                ..
            } => rng.pick(&[0, 1, 2]),
            _ => rng.pick(&[0, n_out]),
        };
        (0..len).map(|_| (rng.normal() * 0.7) as f32).collect()
    };

    let n_trees = match rng.below(10) {
        0 => rng.range(100, 300),
        1..=3 => rng.range(10, 60),
        _ => rng.range(1, 10),
    };
    let mode_style = rng.pick(&["LEQ", "LT", "one", "mixed", "mixed"]);
    let model_mode = match mode_style {
        "LEQ" => MODES[0],
        "LT" => MODES[1],
        _ => rng.pick(&MODES),
    };
    let shuffled_ids = rng.chance(0.5);
    let missing_attr = rng.chance(0.8);
    let dup_weights = rng.chance(0.1);
    let empty_leaves = rng.chance(0.05);
    let mut tree_id: i64 = if rng.chance(0.2) {
        rng.range(0, 3) as i64
    } else {
        0
    };

    let mut nodes = Vec::new();
    let mut weights = Vec::new();
    for t in 0..n_trees {
        // Now and then a first tree of more than 64 leaves, too big for the bit-vector
        // layout, so that the node walk is proven too.
        let big = t == 0 && rng.chance(0.3);
        let max_depth = if big { 12 } else { rng.range(1, 10) };
        let budget = if big { 400 } else { rng.range(1, 120) };
        // The tree in build order: (mode, feature, value, true child, false child, missing).
        let mut built: Vec<Built> = Vec::new();
        let leaf_p = if big {
            0.02
        } else {
            rng.pick(&[0.05, 0.2, 0.4])
        };
        build(
            &mut rng,
            &mut built,
            0,
            max_depth,
            budget,
            leaf_p,
            &pools[..n_features],
            mode_style,
            model_mode,
        );

        let n = built.len();
        let mut ids: Vec<i64> = (0..n as i64).collect();
        let mut order: Vec<usize> = (1..n).collect();
        if shuffled_ids {
            rng.shuffle(&mut ids);
            rng.shuffle(&mut order);
        }
        // ONNX Runtime takes the first node of a tree's run as its root.
        order.insert(0, 0);
        for &i in &order {
            let (mode, feature, value, tc, fc, missing) = built[i];
            let missing = if missing_attr { missing } else { 0 };
            match mode {
                Some(m) => nodes.push(TreeNode {
                    tree: tree_id,
                    id: ids[i],
                    mode: m,
                    feature,
                    value,
                    t: ids[tc],
                    f: ids[fc],
                    missing_true: missing,
                }),
                None => {
                    nodes.push(TreeNode {
                        tree: tree_id,
                        id: ids[i],
                        mode: "LEAF",
                        feature: 0,
                        value: 0.0,
                        t: 0,
                        f: 0,
                        missing_true: missing,
                    });
                    leaf_weights(
                        &mut rng,
                        &kind,
                        t,
                        tree_id,
                        ids[i],
                        n_trees,
                        LeafStyle {
                            dup: dup_weights,
                            empty: empty_leaves,
                            probit: post_transform == "PROBIT",
                        },
                        &mut weights,
                    );
                }
            }
        }
        tree_id += if rng.chance(0.1) {
            rng.range(2, 4) as i64
        } else {
            1
        };
    }
    if rng.chance(0.5) {
        rng.shuffle(&mut weights);
    }
    let wrap = rng.pick(&[Wrap::Plain, Wrap::Plain, Wrap::Lgbm, Wrap::Affine]);
    Spec {
        seed,
        kind,
        post_transform,
        base_values,
        nodes,
        weights,
        n_trees,
        n_features,
        width,
        wrap,
        packed: rng.chance(0.3),
        missing_attr,
        ml_opset: rng.pick(&[1, 3]),
        mode_style,
        shuffled_ids,
        dup_weights,
        empty_leaves,
        pools,
    }
}

type Built = (Option<&'static str>, i64, f32, usize, usize, i64);

/// Appends a subtree to `built` and returns its index; unbalanced by chance, and bounded by
/// `budget` nodes so that deep trees stay small.
#[allow(clippy::too_many_arguments)]
fn build(
    rng: &mut Rng,
    built: &mut Vec<Built>,
    depth: usize,
    max_depth: usize,
    budget: usize,
    leaf_p: f64,
    pools: &[Vec<f32>],
    mode_style: &str,
    model_mode: &'static str,
) -> usize {
    let at = built.len();
    // A one-leaf tree now and then (a root that is a leaf).
    let leaf = depth >= max_depth
        || built.len() + 2 > budget
        || (depth == 0 && rng.chance(0.01))
        || (depth > 0 && rng.chance(leaf_p));
    let missing = rng.below(2) as i64;
    if leaf {
        built.push((None, 0, 0.0, 0, 0, missing));
        return at;
    }
    let feature = rng.below(pools.len());
    let value = rng.pick(&pools[feature]);
    let mode = match mode_style {
        "mixed" => rng.pick(&MODES),
        _ => model_mode,
    };
    built.push((Some(mode), feature as i64, value, 0, 0, missing));
    let t = build(
        rng,
        built,
        depth + 1,
        max_depth,
        budget,
        leaf_p,
        pools,
        mode_style,
        model_mode,
    );
    let f = build(
        rng,
        built,
        depth + 1,
        max_depth,
        budget,
        leaf_p,
        pools,
        mode_style,
        model_mode,
    );
    built[at].3 = t;
    built[at].4 = f;
    at
}

/// Model-wide choices about the leaves' weights.
#[derive(Clone, Copy)]
struct LeafStyle {
    /// Some leaves list a weight twice for one class or target.
    dup: bool,
    /// Some leaves have no weight at all.
    empty: bool,
    /// The post-transform is PROBIT (defined on (0, 1) only).
    probit: bool,
}

#[allow(clippy::too_many_arguments)]
fn leaf_weights(
    rng: &mut Rng,
    kind: &Kind,
    t: usize,
    tree: i64,
    node: i64,
    n_trees: usize,
    style: LeafStyle,
    out: &mut Vec<(i64, i64, i64, f32)>,
) {
    let mut ws: Vec<(i64, f32)> = Vec::new();
    let mixed = |rng: &mut Rng| (rng.normal() * 0.3) as f32;
    match kind {
        Kind::Classifier { labels, weights } => {
            let k = labels.len() as i64;
            match weights {
                Weights::BinaryOneMixed => ws.push((0, mixed(rng))),
                Weights::BinaryOnePositive => ws.push((0, rng.unit() as f32)),
                Weights::BinaryBoth => {
                    let p = rng.unit() as f32;
                    ws.push((0, p / n_trees as f32));
                    ws.push((1, (1.0 - p) / n_trees as f32));
                }
                Weights::EveryClass => {
                    let positive = rng.chance(0.5);
                    for c in 0..k {
                        ws.push((
                            c,
                            if positive {
                                rng.unit() as f32
                            } else {
                                mixed(rng)
                            },
                        ));
                    }
                }
                Weights::RoundRobin => ws.push((t as i64 % k, mixed(rng))),
            }
        }
        Kind::Regressor {
            n_targets,
            aggregate,
        } => {
            for c in 0..*n_targets as i64 {
                // A target a leaf leaves out scores nothing there.
                if *n_targets == 1 || rng.chance(0.9) {
                    let w = if style.probit {
                        // Scores inside (0, 1) mostly, where the probit is a number.
                        let share = if *aggregate == "SUM" {
                            n_trees as f64
                        } else {
                            1.0
                        };
                        (rng.unit() * 0.98 + 0.01) / share
                    } else {
                        rng.normal() * 2.0
                    };
                    ws.push((c, w as f32));
                }
            }
        }
    }
    if style.empty && rng.chance(0.1) {
        ws.clear();
    }
    if style.dup && !ws.is_empty() && rng.chance(0.3) {
        let (c, _) = ws[rng.below(ws.len())];
        ws.push((c, mixed(rng)));
    }
    out.extend(ws.into_iter().map(|(c, w)| (tree, node, c, w)));
}

fn encode(s: &Spec) -> Vec<u8> {
    let mut rng = Rng::new(s.seed ^ 0x5eed);
    let n = &s.nodes;
    let mut attrs: Vec<(&str, Attr)> = vec![
        (
            "nodes_falsenodeids",
            Attr::Ints(n.iter().map(|n| n.f).collect()),
        ),
        (
            "nodes_featureids",
            Attr::Ints(n.iter().map(|n| n.feature).collect()),
        ),
        (
            "nodes_modes",
            Attr::Strings(n.iter().map(|n| n.mode.to_string()).collect()),
        ),
        (
            "nodes_nodeids",
            Attr::Ints(n.iter().map(|n| n.id).collect()),
        ),
        (
            "nodes_treeids",
            Attr::Ints(n.iter().map(|n| n.tree).collect()),
        ),
        (
            "nodes_truenodeids",
            Attr::Ints(n.iter().map(|n| n.t).collect()),
        ),
        (
            "nodes_values",
            Attr::Floats(n.iter().map(|n| n.value).collect()),
        ),
        ("post_transform", Attr::Str(s.post_transform.to_string())),
    ];
    if s.missing_attr {
        attrs.push((
            "nodes_missing_value_tracks_true",
            Attr::Ints(n.iter().map(|n| n.missing_true).collect()),
        ));
    }
    if !s.base_values.is_empty() {
        attrs.push(("base_values", Attr::Floats(s.base_values.clone())));
    }
    let w = &s.weights;
    let (op, prefix) = match &s.kind {
        Kind::Classifier { labels, .. } => {
            match labels {
                Labels::Ints(v) => attrs.push(("classlabels_int64s", Attr::Ints(v.clone()))),
                Labels::Strings(v) => attrs.push(("classlabels_strings", Attr::Strings(v.clone()))),
            }
            ("TreeEnsembleClassifier", "class")
        }
        Kind::Regressor {
            n_targets,
            aggregate,
        } => {
            attrs.push(("n_targets", Attr::Int(*n_targets as i64)));
            attrs.push(("aggregate_function", Attr::Str(aggregate.to_string())));
            ("TreeEnsembleRegressor", "target")
        }
    };
    let ids = format!("{prefix}_ids");
    let nodeids = format!("{prefix}_nodeids");
    let treeids = format!("{prefix}_treeids");
    let weights = format!("{prefix}_weights");
    attrs.push((&ids, Attr::Ints(w.iter().map(|w| w.2).collect())));
    attrs.push((&nodeids, Attr::Ints(w.iter().map(|w| w.1).collect())));
    attrs.push((&treeids, Attr::Ints(w.iter().map(|w| w.0).collect())));
    attrs.push((&weights, Attr::Floats(w.iter().map(|w| w.3).collect())));
    rng.shuffle(&mut attrs);

    let input = value_info("X", tensor_type(FLOAT, &[None, Some(s.width as i64)]));
    let mut nodes = Vec::new();
    let mut inits = Vec::new();
    let mut outputs: Vec<Pb>;
    match &s.kind {
        Kind::Classifier { labels, .. } => {
            let k = labels.len() as i64;
            let label_elem = match labels {
                Labels::Ints(_) => INT64,
                Labels::Strings(_) => STRING,
            };
            let label_out = value_info("label", tensor_type(label_elem, &[None]));
            let probs_out = value_info("probabilities", tensor_type(FLOAT, &[None, Some(k)]));
            match s.wrap {
                Wrap::Plain => {
                    nodes.push(node(
                        op,
                        "ai.onnx.ml",
                        &["X"],
                        &["label", "probabilities"],
                        &attrs,
                        s.packed,
                    ));
                    outputs = vec![label_out, probs_out];
                }
                Wrap::Lgbm => {
                    nodes.push(node(
                        op,
                        "ai.onnx.ml",
                        &["X"],
                        &["label_tensor", "probability_tensor"],
                        &attrs,
                        s.packed,
                    ));
                    nodes.push(node(
                        "Identity",
                        "",
                        &["label_tensor"],
                        &["lgbmlabel"],
                        &[],
                        false,
                    ));
                    nodes.push(node(
                        "Identity",
                        "",
                        &["probability_tensor"],
                        &["lgbmprobabilities"],
                        &[],
                        false,
                    ));
                    if label_elem == INT64 {
                        nodes.push(node(
                            "Cast",
                            "",
                            &["lgbmlabel"],
                            &["label"],
                            &[("to", Attr::Int(INT64))],
                            false,
                        ));
                    } else {
                        nodes.push(node("Identity", "", &["lgbmlabel"], &["label"], &[], false));
                    }
                    nodes.push(node(
                        "Mul",
                        "",
                        &["lgbmprobabilities", "one"],
                        &["probabilities"],
                        &[],
                        false,
                    ));
                    inits.push(float_initializer("one", &[], &[1.0], false));
                    outputs = vec![label_out, probs_out];
                }
                Wrap::Affine => {
                    nodes.push(node(
                        op,
                        "ai.onnx.ml",
                        &["X"],
                        &["label", "raw"],
                        &attrs,
                        s.packed,
                    ));
                    nodes.push(node("Mul", "", &["raw", "scale"], &["scaled"], &[], false));
                    nodes.push(node(
                        "Add",
                        "",
                        &["scaled", "shift"],
                        &["probabilities"],
                        &[],
                        false,
                    ));
                    inits.push(float_initializer(
                        "scale",
                        &[],
                        &[(rng.normal() * 3.0) as f32],
                        rng.chance(0.5),
                    ));
                    inits.push(float_initializer(
                        "shift",
                        &[],
                        &[(rng.normal() * 3.0) as f32],
                        rng.chance(0.5),
                    ));
                    outputs = vec![probs_out, label_out];
                    if label_elem == INT64 {
                        nodes.push(node(
                            "Cast",
                            "",
                            &["label"],
                            &["label_float"],
                            &[("to", Attr::Int(FLOAT))],
                            false,
                        ));
                        outputs.push(value_info("label_float", tensor_type(FLOAT, &[None])));
                    }
                }
            }
        }
        Kind::Regressor { n_targets, .. } => {
            let out = value_info(
                "variable",
                tensor_type(FLOAT, &[None, Some(*n_targets as i64)]),
            );
            match s.wrap {
                Wrap::Plain => {
                    nodes.push(node(
                        op,
                        "ai.onnx.ml",
                        &["X"],
                        &["variable"],
                        &attrs,
                        s.packed,
                    ));
                }
                Wrap::Lgbm => {
                    nodes.push(node(op, "ai.onnx.ml", &["X"], &["raw"], &attrs, s.packed));
                    nodes.push(node("Identity", "", &["raw"], &["variable"], &[], false));
                }
                Wrap::Affine => {
                    nodes.push(node(op, "ai.onnx.ml", &["X"], &["raw"], &attrs, s.packed));
                    nodes.push(node("Add", "", &["raw", "shift"], &["shifted"], &[], false));
                    nodes.push(node(
                        "Mul",
                        "",
                        &["shifted", "scale"],
                        &["variable"],
                        &[],
                        false,
                    ));
                    inits.push(float_initializer(
                        "scale",
                        &[],
                        &[(rng.normal() * 3.0) as f32],
                        rng.chance(0.5),
                    ));
                    inits.push(float_initializer(
                        "shift",
                        &[],
                        &[(rng.normal() * 3.0) as f32],
                        rng.chance(0.5),
                    ));
                }
            }
            outputs = vec![out];
        }
    }
    model_bytes(
        graph("random_ensemble", nodes, inits, vec![input], outputs),
        s.ml_opset,
    )
}

/// Rows that reach every branch and every comparison's edge: values from the thresholds'
/// pools (equality), their float32 neighbours, NaN, the infinities, both zeros.
fn random_rows(seed: u64, s: &Spec, rows: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed ^ 0xdada);
    let mut x = Vec::with_capacity(rows * s.width);
    for _ in 0..rows {
        for c in 0..s.width {
            let pool = &s.pools[c];
            let v = match rng.below(100) {
                0..=4 => f32::NAN,
                5 => f32::INFINITY,
                6 => f32::NEG_INFINITY,
                7..=8 => -0.0,
                9..=10 => 0.0,
                11..=45 => rng.pick(pool),
                46..=55 => {
                    let p = rng.pick(pool);
                    if p.is_finite() {
                        let bits = p.to_bits();
                        // One ulp either way (a step away from zero or towards it).
                        f32::from_bits(if rng.chance(0.5) {
                            bits + 1
                        } else {
                            bits.saturating_sub(1)
                        })
                    } else {
                        p
                    }
                }
                _ => {
                    let p = rng.pick(pool);
                    let spread = if p.is_finite() && p != 0.0 {
                        p.abs() as f64
                    } else {
                        1.0
                    };
                    (rng.normal() * spread) as f32
                }
            };
            x.push(v);
        }
    }
    x
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Hundreds of generated ensembles, each at 1 row (ONNX Runtime's N == 1 path), 7 rows and
/// 1000 rows, and a few at 4200 rows (its batched path for N >= 4096).
#[test]
fn random_ensembles_match_onnx_runtime_bit_for_bit() {
    let (seeds, all): (Vec<u64>, bool) = match std::env::var("TREES_SEED") {
        Ok(s) => {
            let s = s.trim_start_matches("0x");
            (
                vec![u64::from_str_radix(s, 16).expect("TREES_SEED is hex")],
                true,
            )
        }
        Err(_) => {
            let n: u64 = std::env::var("TREES_MODELS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(300);
            ((0..n).map(|i| 0x7ee0_0000 + i).collect(), false)
        }
    };
    let mut failures = Vec::new();
    let mut refused: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut compared = 0usize;
    let mut layouts: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, &seed) in seeds.iter().enumerate() {
        let mut spec = random_spec(seed);
        // To tell whether a failure is the ensemble's or the graph's around it.
        if let Ok(w) = std::env::var("TREES_WRAP") {
            spec.wrap = match w.as_str() {
                "plain" => Wrap::Plain,
                "lgbm" => Wrap::Lgbm,
                _ => Wrap::Affine,
            };
        }
        let bytes = encode(&spec);
        let big = all || i % 25 == 0;
        let max_rows = if big { 4200 } else { 1000 };
        let x = random_rows(seed, &spec, max_rows);
        let counts: &[usize] = if big {
            &[1, 7, 1000, 4200]
        } else {
            &[1, 7, 1000]
        };
        match compare_model(&spec.describe(), &bytes, &x, spec.width, counts) {
            Ok(Verdict::Identical(layout)) => {
                compared += 1;
                *layouts.entry(layout).or_default() += 1;
            }
            Ok(Verdict::Refused(why)) => {
                refused.entry(why).or_default().push(format!("{:#x}", seed))
            }
            Err(e) => {
                let kept = keep_model(&format!("trees-{seed:#x}.onnx"), &bytes);
                failures.push(format!("{e}\nmodel bytes: {}", kept.display()));
            }
        }
    }
    let refusals: String = refused
        .iter()
        .map(|(why, seeds)| format!("\n  {} refused ({why}): {}", seeds.len(), seeds.join(" ")))
        .collect();
    // One line a model (what it is, the first difference), then the first few in full.
    let index: String = failures
        .iter()
        .map(|f| {
            let mut lines = f.lines();
            let what = lines.next().unwrap_or_default();
            let what = what.split(", base_values").next().unwrap_or(what);
            let diff = lines.next().unwrap_or_default();
            format!(
                "\n  {what} | {}",
                diff.split(" (both NaN").next().unwrap_or(diff)
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} models differ from ONNX Runtime (rerun one with TREES_SEED=<seed>):{index}\n\n{}\n\nrefused:{refusals}",
        failures.len(),
        seeds.len(),
        failures
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n")
    );
    // Shown with --nocapture: what the evaluator leaves to ONNX Runtime, and how often.
    eprintln!(
        "{compared} of {} models compared ({layouts:?}); refused:{refusals}",
        seeds.len()
    );
    // Each layout has its own code for the same comparisons: each must have been proven.
    if !all {
        // The scalar walk by blocks is compared on every model too (`compare_model`).
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::arch::is_x86_feature_detected!("avx2");
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = false;
        let blocks = if avx2 {
            "node walk by blocks, AVX2 gathers"
        } else {
            "node walk by blocks"
        };
        for layout in ["bit vectors", blocks, "node walk by row"] {
            let n = layouts.get(layout).copied().unwrap_or(0);
            assert!(
                n * 10 >= compared,
                "only {n} of {compared} compared models were scored by the {layout:?} layout: {layouts:?}"
            );
        }
    }
    // The generator writes plain ensembles the evaluator is meant to take, with a few
    // deliberate oddities (leaves without weights, weights listed twice): a refusal is a
    // lost case, not a pass, so most models must be compared.
    assert!(
        compared * 100 >= seeds.len() * 85,
        "{compared} of {} models compared; too many refused:{refusals}",
        seeds.len()
    );
}

/// The first generated spec from `*seed` on that `keep` likes, changed by `tweak`, whose
/// model the evaluator takes (a refusal here would hide the case the test is about).
fn draw(
    seed: &mut u64,
    keep: impl Fn(&Spec) -> bool,
    tweak: impl Fn(&mut Spec),
) -> Result<Spec, String> {
    let mut last = String::from("no spec drawn");
    for _ in 0..400 {
        *seed += 1;
        let mut s = random_spec(*seed);
        if !keep(&s) {
            continue;
        }
        tweak(&mut s);
        match NativeEnsemble::from_onnx(&encode(&s)) {
            Ok(_) => return Ok(s),
            Err(e) => last = format!("{}: refused: {}", s.describe(), e.0),
        }
    }
    Err(last)
}

/// Compares each spec's model at 1, 7 and 300 rows; panics with every difference.
fn assert_specs_identical(specs: Vec<Result<Spec, String>>) {
    let mut failures = Vec::new();
    for spec in specs {
        let spec = match spec {
            Ok(s) => s,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let bytes = encode(&spec);
        let x = random_rows(spec.seed, &spec, 300);
        // ONNX Runtime writes only the first probability of a binary classifier with one
        // class id under PROBIT: the second is whatever its buffer held (zeros from Python,
        // old values here), so no evaluator can match it.
        let unwritten = match &spec.kind {
            Kind::Classifier {
                weights: Weights::BinaryOneMixed | Weights::BinaryOnePositive,
                ..
            } if spec.post_transform == "PROBIT" => Some(("probabilities", 1)),
            _ => None,
        };
        let about = spec.describe();
        match compare_model_except(&about, &bytes, &x, spec.width, &[1, 7, 300], unwritten) {
            Ok(Verdict::Identical(_)) => {}
            // PROBIT is left to ONNX Runtime on purpose: its NaN results carry another sign
            // bit there, and this case's second column is never written.
            Ok(Verdict::Refused(why)) if spec.post_transform == "PROBIT" => {
                assert!(why.contains("PROBIT"), "{why}")
            }
            Ok(Verdict::Refused(why)) => {
                failures.push(format!("{}: refused: {why}", spec.describe()))
            }
            Err(e) => {
                let kept = keep_model(&format!("trees-{:#x}.onnx", spec.seed), &bytes);
                failures.push(format!("{e}\nmodel bytes: {}", kept.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differ:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Plain leaves: one weight per class or target each.
fn plain_leaves(s: &Spec) -> bool {
    !s.dup_weights && !s.empty_leaves
}

/// Every node mode alone, in a classifier and a regressor, through every wrapper graph, so
/// that a mode or a graph the evaluator gets wrong shows as such rather than as one seed
/// among hundreds.
#[test]
fn every_mode_and_wrapper_is_identical() {
    let mut seed = 0xfeed_0000u64;
    let mut specs = Vec::new();
    for mode in MODES {
        for wrap in [Wrap::Plain, Wrap::Lgbm, Wrap::Affine] {
            for classifier in [true, false] {
                specs.push(draw(
                    &mut seed,
                    |s| matches!(s.kind, Kind::Classifier { .. }) == classifier && plain_leaves(s),
                    |s| {
                        for n in &mut s.nodes {
                            if n.mode != "LEAF" {
                                n.mode = mode;
                            }
                        }
                        s.mode_style = mode;
                        s.wrap = wrap;
                    },
                ));
            }
        }
    }
    assert_specs_identical(specs);
}

/// Binary classifiers with one class id: ONNX Runtime treats all-positive weights (scores
/// read as probabilities) apart from mixed signs, for the label and the second column,
/// under every post-transform the evaluator takes (PROBIT it leaves to ONNX Runtime: see
/// below) and with 0, 1 or 2 base values.
#[test]
fn binary_one_class_id_every_post_transform_and_base_values() {
    let mut seed = 0xb1_0000u64;
    let mut specs = Vec::new();
    for weights in [Weights::BinaryOnePositive, Weights::BinaryOneMixed] {
        for post in ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"] {
            for base in [0usize, 1, 2] {
                specs.push(draw(
                    &mut seed,
                    |s| {
                        matches!(&s.kind, Kind::Classifier { weights: w, .. } if *w == weights)
                            && plain_leaves(s)
                    },
                    |s| {
                        s.post_transform = post;
                        s.base_values = [0.3f32, -0.2][..base].to_vec();
                    },
                ));
            }
        }
    }
    assert_specs_identical(specs);
    // ONNX Runtime writes NaN PROBIT results with another sign bit, and leaves this case's
    // second probability unwritten: no evaluator can match it, so the model is refused.
    let mut probit = random_spec(0xb1_ffff);
    probit.post_transform = "PROBIT";
    let refused = NativeEnsemble::from_onnx(&encode(&probit)).err();
    assert!(
        refused.as_ref().is_some_and(|e| e.0.contains("PROBIT")),
        "{refused:?}"
    );
}

/// A leaf that lists two weights for one class or target (no converter writes this, ONNX
/// Runtime accepts it): whatever ONNX Runtime makes of it, the evaluator must make the same,
/// or refuse the model.
#[test]
fn leaves_listing_a_weight_twice() {
    let mut seed = 0xd0_0000u64;
    let mut specs = Vec::new();
    for regressor_targets in [Some(1usize), Some(3), None] {
        for _ in 0..3 {
            let s = draw(
                &mut seed,
                |s| {
                    s.dup_weights
                        && !s.empty_leaves
                        && match (&s.kind, regressor_targets) {
                            (Kind::Regressor { n_targets, .. }, Some(t)) => *n_targets == t,
                            (Kind::Classifier { .. }, None) => true,
                            _ => false,
                        }
                },
                |_| {},
            );
            // A refusal is a fine answer here; only a different one is not.
            if let Ok(s) = s {
                specs.push(Ok(s));
            }
        }
    }
    assert_specs_identical(specs);
}

/// The churn job's features, as `jobs/churn.toml` computes them (nulls filled with 0,
/// `ln(1 + support_calls)` in float64 then cast), every region, with rows of NaN, infinities
/// and signed zeros added at the end.
fn churn_rows() -> (Vec<f32>, usize) {
    let mut files: Vec<PathBuf> = glob_parquet(Path::new(&sample("churn/data")));
    files.sort();
    let mut x = Vec::new();
    for f in files {
        let t = read_parquet(&f);
        let num = |c: &Cell| match c {
            Cell::Null => 0.0,
            Cell::Float(v) => *v,
            Cell::Int(v) => *v as f64,
            Cell::Bool(b) => f64::from(u8::from(*b)),
            Cell::Text(s) => s.parse::<f64>().unwrap(),
            Cell::List(_) => panic!("a list"),
        };
        let col = |name: &str| t[name].iter().map(num).collect::<Vec<f64>>();
        let (tenure, monthly, total) =
            (col("tenure"), col("monthly_charges"), col("total_charges"));
        let (calls, senior) = (col("support_calls"), col("is_senior"));
        for i in 0..tenure.len() {
            x.push(tenure[i] as f32);
            x.push(monthly[i] as f32);
            x.push(total[i] as f32);
            x.push((1.0 + calls[i]).ln() as f32);
            x.push(senior[i] as f32);
        }
    }
    add_odd_rows(&mut x, 5);
    (x, 5)
}

fn glob_parquet(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(glob_parquet(&p));
        } else if p.extension().is_some_and(|e| e == "parquet") {
            out.push(p);
        }
    }
    out
}

/// Copies of the first rows with some columns replaced by NaN, ±inf, ±0, put first so that
/// the 1-row and 7-row calls see them too.
fn add_odd_rows(x: &mut Vec<f32>, width: usize) {
    let mut rng = Rng::new(0x0dd);
    let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0];
    let mut odd = Vec::new();
    for r in 0..60 {
        let base = &x[(r % (x.len() / width)) * width..][..width];
        let mut row = base.to_vec();
        for v in row.iter_mut() {
            if r < 5 {
                // Whole rows of one special value.
                *v = specials[r];
            } else if rng.chance(0.4) {
                *v = rng.pick(&specials);
            }
        }
        odd.extend(row);
    }
    odd.append(x);
    *x = odd;
}

fn fraud_rows() -> (Vec<f32>, usize) {
    let t = read_parquet(Path::new(&sample("fraud/transactions.parquet")));
    let cols: Vec<&Vec<Cell>> = (0..6).map(|j| &t[&format!("x{j}")]).collect();
    let mut x = Vec::with_capacity(cols[0].len() * 6);
    for i in 0..cols[0].len() {
        for (j, col) in cols.iter().enumerate() {
            match &col[i] {
                // Stored as float32: the round trip through f64 is exact.
                Cell::Float(v) => x.push(*v as f32),
                other => panic!("x{j}[{i}] is {other:?}"),
            }
        }
    }
    add_odd_rows(&mut x, 6);
    (x, 6)
}

#[track_caller]
fn assert_sample_identical(rel: &str, x: &[f32], width: usize) {
    let bytes = std::fs::read(sample(rel)).unwrap();
    let rows = x.len() / width;
    match compare_model(rel, &bytes, x, width, &[1, 7, 1000, rows]) {
        Ok(Verdict::Identical(_)) => {}
        Ok(Verdict::Refused(why)) => panic!("{rel}: refused: {why}"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn churn_lightgbm_models_match_onnx_runtime() {
    let (x, width) = churn_rows();
    assert!(x.len() / width > 3000, "the churn data has 3000 rows");
    assert_sample_identical("churn/churn_lgbm.onnx", &x, width);
    assert_sample_identical("churn/challenger_lgbm.onnx", &x, width);
}

#[test]
fn fraud_xgboost_model_matches_onnx_runtime() {
    let (x, width) = fraud_rows();
    assert!(x.len() / width > 2500);
    assert_sample_identical("fraud/fraud_xgb.onnx", &x, width);
}

/// The sample models the evaluator cannot follow (no ensemble, or more than it knows).
#[test]
fn models_that_are_not_plain_ensembles_are_refused() {
    for rel in [
        "houses/price_ridge.onnx",
        "plans/plans_pipeline.onnx",
        "synthetic/fixed_batch.onnx",
        "synthetic/rank1_int.onnx",
        "synthetic/lookup.onnx",
    ] {
        let bytes = std::fs::read(sample(rel)).unwrap();
        assert!(
            NativeEnsemble::from_onnx(&bytes).is_err(),
            "{rel} was taken"
        );
    }
    assert!(NativeEnsemble::from_onnx(b"not a model").is_err());
    assert!(NativeEnsemble::from_onnx(&[]).is_err());
}

/// A small binary ensemble with `extra` nodes after it, as graph bytes.
fn ensemble_then(
    input_elem: i64,
    ens_outputs: [&str; 2],
    extra: Vec<Pb>,
    inits: Vec<Pb>,
    outputs: Vec<Pb>,
) -> Vec<u8> {
    let attrs: Vec<(&str, Attr)> = vec![
        ("classlabels_int64s", Attr::Ints(vec![0, 1])),
        ("class_ids", Attr::Ints(vec![0, 0])),
        ("class_nodeids", Attr::Ints(vec![1, 2])),
        ("class_treeids", Attr::Ints(vec![0, 0])),
        ("class_weights", Attr::Floats(vec![-0.5, 0.75])),
        ("nodes_falsenodeids", Attr::Ints(vec![2, 0, 0])),
        ("nodes_featureids", Attr::Ints(vec![1, 0, 0])),
        (
            "nodes_modes",
            Attr::Strings(vec!["BRANCH_LEQ".into(), "LEAF".into(), "LEAF".into()]),
        ),
        ("nodes_nodeids", Attr::Ints(vec![0, 1, 2])),
        ("nodes_treeids", Attr::Ints(vec![0, 0, 0])),
        ("nodes_truenodeids", Attr::Ints(vec![1, 0, 0])),
        ("nodes_values", Attr::Floats(vec![0.5, 0.0, 0.0])),
        ("post_transform", Attr::Str("LOGISTIC".into())),
    ];
    let mut nodes = vec![node(
        "TreeEnsembleClassifier",
        "ai.onnx.ml",
        &["X"],
        &ens_outputs,
        &attrs,
        false,
    )];
    nodes.extend(extra);
    let input = value_info("X", tensor_type(input_elem, &[None, Some(3)]));
    model_bytes(graph("refusal", nodes, inits, vec![input], outputs), 3)
}

/// Graphs ONNX Runtime runs but the evaluator cannot follow: it must say no, not guess.
#[test]
fn ensembles_with_nodes_it_cannot_follow_are_refused() {
    let label = || value_info("label", tensor_type(INT64, &[None]));
    let probs = || value_info("probabilities", tensor_type(FLOAT, &[None, Some(2)]));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a Sigmoid after the ensemble",
            ensemble_then(
                FLOAT,
                ["label", "raw"],
                vec![node(
                    "Sigmoid",
                    "",
                    &["raw"],
                    &["probabilities"],
                    &[],
                    false,
                )],
                vec![],
                vec![label(), probs()],
            ),
        ),
        (
            "a ZipMap after the ensemble",
            ensemble_then(
                FLOAT,
                ["label", "raw"],
                vec![node(
                    "ZipMap",
                    "ai.onnx.ml",
                    &["raw"],
                    &["probabilities"],
                    &[("classlabels_int64s", Attr::Ints(vec![0, 1]))],
                    false,
                )],
                vec![],
                vec![
                    label(),
                    value_info(
                        "probabilities",
                        // seq(map(int64, float))
                        Pb::default().msg(
                            4,
                            Pb::default().msg(
                                1,
                                Pb::default().msg(
                                    5,
                                    Pb::default().int(1, INT64).msg(2, tensor_type(FLOAT, &[])),
                                ),
                            ),
                        ),
                    ),
                ],
            ),
        ),
        (
            "a float64 input",
            ensemble_then(
                DOUBLE,
                ["label", "probabilities"],
                vec![],
                vec![],
                vec![label(), probs()],
            ),
        ),
    ];
    for (what, bytes) in cases {
        // The model itself is sound: ONNX Runtime opens and runs it.
        let mut oracle = Oracle::open(&bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
        if what != "a float64 input" {
            oracle
                .run(&[0.0, 1.0, 2.0], 1, 3)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        assert!(NativeEnsemble::from_onnx(&bytes).is_err(), "{what}: taken");
    }
}

/// Graphs at the edge of what the evaluator follows: `Mul` by a per-class vector rather than
/// a scalar, the scalar first, a shape-[1] scalar. Taking them is allowed, guessing is not:
/// each one is either refused or identical to ONNX Runtime.
#[test]
fn edge_graphs_are_refused_or_identical() {
    let label = || value_info("label", tensor_type(INT64, &[None]));
    let probs = || value_info("probabilities", tensor_type(FLOAT, &[None, Some(2)]));
    let mul = |a: &str, b: &str| node("Mul", "", &[a, b], &["probabilities"], &[], false);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "Mul by a [2] vector",
            ensemble_then(
                FLOAT,
                ["label", "raw"],
                vec![mul("raw", "w")],
                vec![float_initializer("w", &[2], &[2.0, -3.0], false)],
                vec![label(), probs()],
            ),
        ),
        (
            "Mul by a [1, 2] vector",
            ensemble_then(
                FLOAT,
                ["label", "raw"],
                vec![mul("raw", "w")],
                vec![float_initializer("w", &[1, 2], &[0.5, 3.0], true)],
                vec![label(), probs()],
            ),
        ),
        (
            "Mul with the scalar first",
            ensemble_then(
                FLOAT,
                ["label", "raw"],
                vec![mul("w", "raw")],
                vec![float_initializer("w", &[], &[1.7], false)],
                vec![label(), probs()],
            ),
        ),
        (
            "Mul by a [1] tensor",
            ensemble_then(
                FLOAT,
                ["label", "raw"],
                vec![mul("raw", "w")],
                vec![float_initializer("w", &[1], &[-0.3], true)],
                vec![label(), probs()],
            ),
        ),
        (
            "the label cast to float",
            ensemble_then(
                FLOAT,
                ["lab", "probabilities"],
                vec![node(
                    "Cast",
                    "",
                    &["lab"],
                    &["label"],
                    &[("to", Attr::Int(FLOAT))],
                    false,
                )],
                vec![],
                vec![value_info("label", tensor_type(FLOAT, &[None])), probs()],
            ),
        ),
        (
            "an ensemble output that is not a graph output",
            ensemble_then(
                FLOAT,
                ["unused", "probabilities"],
                vec![],
                vec![],
                vec![probs()],
            ),
        ),
    ];
    let x: Vec<f32> = vec![
        0.0,
        0.5,
        1.0, //
        1.0,
        0.49,
        0.0, //
        f32::NAN,
        f32::NAN,
        f32::NAN, //
        2.0,
        -0.0,
        7.0, //
        0.0,
        f32::INFINITY,
        0.0, //
        0.0,
        0.500_000_06,
        0.0, //
        3.0,
        f32::NEG_INFINITY,
        1.0,
    ];
    let mut failures = Vec::new();
    for (what, bytes) in cases {
        match compare_model(what, &bytes, &x, 3, &[1, 7]) {
            Ok(Verdict::Identical(_)) => eprintln!("{what}: taken, identical"),
            Ok(Verdict::Refused(why)) => eprintln!("{what}: refused ({why})"),
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------------------------------------
// TreeEnsemble (ai.onnx.ml 5)
// ---------------------------------------------------------------------------------------------

/// A random spec's trees written as one `TreeEnsemble` (ai.onnx.ml 5).
struct V5Model {
    bytes: Vec<u8>,
    /// Whether some branch is a `BRANCH_MEMBER` set.
    members: bool,
}

/// The opset-5 attributes, built up tree by tree.
#[derive(Default)]
struct V5Arrays {
    features: Vec<i64>,
    modes: Vec<u8>,
    splits: Vec<f32>,
    trues: Vec<i64>,
    true_leaf: Vec<i64>,
    falses: Vec<i64>,
    false_leaf: Vec<i64>,
    missing: Vec<i64>,
    leaf_targets: Vec<i64>,
    leaf_weights: Vec<f32>,
    membership: Vec<f32>,
    roots: Vec<i64>,
}

/// ONNX Runtime's numbers for a post-transform (its `POST_EVAL_TRANSFORM` order).
fn v5_post_transform(name: &str) -> i64 {
    let order = ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT"];
    order.iter().position(|p| *p == name).unwrap() as i64
}

/// A `BRANCH_MEMBER` set: a few small integers (ONNX Runtime loads only integers), or (`big`)
/// one it tests by truncating the value (31 values or more, some negative or past 30), which
/// the evaluator refuses.
fn member_set(rng: &mut Rng, big: bool) -> Vec<f32> {
    if big {
        return (0..rng.range(31, 40))
            .map(|_| rng.range(0, 80) as f32 - 20.0)
            .collect();
    }
    (0..rng.range(1, 6))
        .map(|_| rng.range(0, 30) as f32)
        .collect()
}

/// `s`'s trees in opset 5's form: branches and leaves in lists of their own (each leaf keeps
/// the first weight the spec gave it, as opset 5 has one per leaf; no base values), some
/// branches turned into sets whose members join their feature's pool, so that rows land on
/// them. A one-leaf tree becomes a split with that leaf on both sides.
fn encode_v5(s: &mut Spec) -> V5Model {
    let mut rng = Rng::new(s.seed ^ 0x7e55);
    let with_members = rng.chance(0.5);
    let mut big_set = with_members && rng.chance(0.2);
    let mut a = V5Arrays::default();
    let mut trees: Vec<Vec<TreeNode>> = Vec::new();
    for n in &s.nodes {
        match trees.last_mut() {
            Some(t) if t[0].tree == n.tree => t.push(n.clone()),
            _ => trees.push(vec![n.clone()]),
        }
    }
    let mut joined: Vec<(usize, Vec<f32>)> = Vec::new();
    for tree in &trees {
        // Where each node id went: (is a leaf, index in its list).
        let mut at: BTreeMap<i64, (bool, i64)> = BTreeMap::new();
        let leaf = |a: &mut V5Arrays, n: &TreeNode| {
            let (target, weight) = s
                .weights
                .iter()
                .find(|w| w.0 == n.tree && w.1 == n.id)
                .map_or((0, 0.0), |w| (w.2, w.3));
            a.leaf_targets.push(target);
            a.leaf_weights.push(weight);
            a.leaf_weights.len() as i64 - 1
        };
        let branches: Vec<&TreeNode> = tree.iter().filter(|n| n.mode != "LEAF").collect();
        for (i, n) in branches.iter().enumerate() {
            at.insert(n.id, (false, (a.features.len() + i) as i64));
        }
        for n in tree.iter().filter(|n| n.mode == "LEAF") {
            at.insert(n.id, (true, leaf(&mut a, n)));
        }
        if branches.is_empty() {
            let only = leaf(&mut a, &tree[0]) - 1;
            a.roots.push(a.features.len() as i64);
            a.features.push(0);
            a.modes.push(0);
            a.splits.push(0.0);
            a.trues.push(only);
            a.falses.push(only + 1);
            a.true_leaf.push(1);
            a.false_leaf.push(1);
            a.missing.push(0);
            continue;
        }
        a.roots.push(at[&tree[0].id].1);
        for n in branches {
            let mode = MODES.iter().position(|m| *m == n.mode).unwrap() as u8;
            if with_members && rng.chance(0.25) {
                let set = member_set(&mut rng, std::mem::take(&mut big_set));
                a.membership.extend(&set);
                a.membership.push(f32::NAN);
                joined.push((n.feature as usize, set));
                a.modes.push(6);
            } else {
                a.modes.push(mode);
            }
            a.features.push(n.feature);
            a.splits.push(n.value);
            let (t, f) = (at[&n.t], at[&n.f]);
            a.trues.push(t.1);
            a.true_leaf.push(i64::from(t.0));
            a.falses.push(f.1);
            a.false_leaf.push(i64::from(f.0));
            a.missing.push(n.missing_true);
        }
    }
    for (feature, set) in joined {
        s.pools[feature].extend(set);
    }
    V5Model {
        members: a.modes.contains(&6),
        bytes: v5_model_bytes(s, a),
    }
}

fn v5_model_bytes(s: &Spec, a: V5Arrays) -> Vec<u8> {
    let (n_out, aggregate) = match &s.kind {
        Kind::Classifier { labels, .. } => (labels.len(), 1),
        Kind::Regressor {
            n_targets,
            aggregate,
        } => {
            let order = ["AVERAGE", "SUM", "MIN", "MAX"];
            (
                *n_targets,
                order.iter().position(|p| p == aggregate).unwrap(),
            )
        }
    };
    let mut attrs: Vec<(&str, Attr)> = vec![
        ("n_targets", Attr::Int(n_out as i64)),
        ("aggregate_function", Attr::Int(aggregate as i64)),
        (
            "post_transform",
            Attr::Int(v5_post_transform(s.post_transform)),
        ),
        ("nodes_featureids", Attr::Ints(a.features)),
        ("nodes_modes", Attr::U8Tensor(a.modes)),
        ("nodes_splits", Attr::FloatTensor(a.splits)),
        ("nodes_truenodeids", Attr::Ints(a.trues)),
        ("nodes_trueleafs", Attr::Ints(a.true_leaf)),
        ("nodes_falsenodeids", Attr::Ints(a.falses)),
        ("nodes_falseleafs", Attr::Ints(a.false_leaf)),
        ("leaf_targetids", Attr::Ints(a.leaf_targets)),
        ("leaf_weights", Attr::FloatTensor(a.leaf_weights)),
        ("tree_roots", Attr::Ints(a.roots)),
    ];
    if !a.membership.is_empty() {
        attrs.push(("membership_values", Attr::FloatTensor(a.membership)));
    }
    if s.missing_attr {
        attrs.push(("nodes_missing_value_tracks_true", Attr::Ints(a.missing)));
    }
    let ensemble = node(
        "TreeEnsemble",
        "ai.onnx.ml",
        &["X"],
        &["variable"],
        &attrs,
        s.packed,
    );
    let input = value_info("X", tensor_type(FLOAT, &[None, Some(s.width as i64)]));
    let output = value_info("variable", tensor_type(FLOAT, &[None, Some(n_out as i64)]));
    model_bytes(
        graph(
            "random_v5",
            vec![ensemble],
            vec![],
            vec![input],
            vec![output],
        ),
        5,
    )
}

/// The generated ensembles again, written as `TreeEnsemble` (ai.onnx.ml 5), some with
/// `BRANCH_MEMBER` sets: ONNX Runtime scores these through its own conversion to the older
/// operators, which the evaluator repeats.
#[test]
fn tree_ensemble_opset_5_matches_onnx_runtime_bit_for_bit() {
    let n: u64 = std::env::var("TREES_MODELS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let mut failures = Vec::new();
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let (mut compared, mut with_members) = (0, 0);
    for i in 0..n {
        let seed = 0x5e50_0000 + i;
        let mut spec = random_spec(seed);
        let v5 = encode_v5(&mut spec);
        let about = format!("opset 5, members {}: {}", v5.members, spec.describe());
        let x = random_rows(seed, &spec, 1000);
        match compare_model(&about, &v5.bytes, &x, spec.width, &[1, 7, 1000]) {
            Ok(Verdict::Identical(_)) => {
                compared += 1;
                with_members += usize::from(v5.members);
            }
            Ok(Verdict::Refused(why)) => *refused.entry(why).or_default() += 1,
            Err(e) => {
                let kept = keep_model(&format!("trees-v5-{seed:#x}.onnx"), &v5.bytes);
                failures.push(format!("{e}\nmodel bytes: {}", kept.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} opset-5 models differ from ONNX Runtime:\n\n{}",
        failures.len(),
        failures
            .iter()
            .take(4)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n")
    );
    eprintln!("{compared} of {n} compared, {with_members} with sets; refused: {refused:?}");
    // PROBIT and big sets are refused by design; everything else must be compared.
    assert!(
        compared * 100 >= n as usize * 80,
        "{compared} of {n} compared; refused: {refused:?}"
    );
    assert!(
        with_members * 4 >= compared,
        "only {with_members} of {compared} compared models had BRANCH_MEMBER sets"
    );
    assert!(
        refused.keys().any(|k| k.contains("BRANCH_MEMBER")),
        "no big set was refused: {refused:?}"
    );
}

/// A root whose two children are one leaf is, to ONNX Runtime, a leaf: its weight is read at
/// the root's own index in `leaf_weights`, not at the child's. Both trees here put the two
/// apart, so that reading the child's would differ.
#[test]
fn opset_5_root_with_one_leaf_on_both_sides_reads_as_onnx_runtime_reads_it() {
    let attrs: Vec<(&str, Attr)> = vec![
        ("n_targets", Attr::Int(1)),
        ("nodes_featureids", Attr::Ints(vec![0, 0])),
        ("nodes_modes", Attr::U8Tensor(vec![0, 0])),
        ("nodes_splits", Attr::FloatTensor(vec![0.5, 0.0])),
        ("nodes_truenodeids", Attr::Ints(vec![0, 2])),
        ("nodes_trueleafs", Attr::Ints(vec![1, 1])),
        ("nodes_falsenodeids", Attr::Ints(vec![1, 2])),
        ("nodes_falseleafs", Attr::Ints(vec![1, 1])),
        ("leaf_targetids", Attr::Ints(vec![0, 0, 0])),
        ("leaf_weights", Attr::FloatTensor(vec![1.0, 2.0, 4.0])),
        ("tree_roots", Attr::Ints(vec![0, 1])),
    ];
    let ensemble = node("TreeEnsemble", "ai.onnx.ml", &["X"], &["y"], &attrs, false);
    let input = value_info("X", tensor_type(FLOAT, &[None, Some(1)]));
    let output = value_info("y", tensor_type(FLOAT, &[None, Some(1)]));
    let bytes = model_bytes(
        graph(
            "one_leaf_root",
            vec![ensemble],
            vec![],
            vec![input],
            vec![output],
        ),
        5,
    );
    let x = [0.0, 1.0, f32::NAN];
    match compare_model("one-leaf root", &bytes, &x, 1, &[3]) {
        Ok(Verdict::Identical(_)) => {}
        Ok(Verdict::Refused(why)) => panic!("refused: {why}"),
        Err(e) => panic!("{e}"),
    }
}

/// A `TreeEnsemble` model with sets, run from a job spec by the real binary: the run scores
/// it natively (`_metrics.json` says so) and every prediction is ONNX Runtime's own.
#[test]
fn a_job_scores_an_opset_5_model_natively_with_onnx_runtimes_numbers() {
    let mut seed = 0x5e51_0000;
    let (spec, v5) = loop {
        seed += 1;
        let mut spec = random_spec(seed);
        let v5 = encode_v5(&mut spec);
        if v5.members && NativeEnsemble::from_onnx(&v5.bytes).is_ok() {
            break (spec, v5);
        }
    };
    let s = common::Scratch::new();
    std::fs::write(s.path("model.onnx"), &v5.bytes).unwrap();
    let rows = 3000;
    // CSV holds no NaN or infinities as numbers: those rows get 0 (still on the thresholds).
    let x: Vec<f32> = random_rows(seed, &spec, rows)
        .into_iter()
        .map(|v| if v.is_finite() { v } else { 0.0 })
        .collect();
    let columns: Vec<String> = (0..spec.width).map(|c| format!("f{c}")).collect();
    let mut csv = format!("id,{}\n", columns.join(","));
    for (r, row) in x.chunks(spec.width).enumerate() {
        let values: Vec<String> = row.iter().map(|v| v.to_string()).collect();
        let _ = writeln!(csv, "{r},{}", values.join(","));
    }
    std::fs::write(s.path("input.csv"), csv).unwrap();
    let quoted: Vec<String> = columns.iter().map(|c| format!("{c:?}")).collect();
    let job = s.job(
        "v5.toml",
        &format!(
            "name = \"v5\"\n[input]\nuri = \"../input.csv\"\n[model]\nuri = \"../model.onnx\"\n\
             [inputs.X]\ncolumns = [{}]\n[output]\nuri = \"../out/v5/\"\npassthrough = [\"id\"]\n\
             [outputs]\ny = \"variable[0]\"\n",
            quoted.join(", ")
        ),
    );
    let o = common::run(&["run", job.to_str().unwrap()]);
    common::assert_ok(&o);
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.path("out/v5/_metrics.json")).unwrap())
            .unwrap();
    assert_eq!(metrics["tree_engine"], "native", "{metrics}");

    let mut oracle = Oracle::open(&v5.bytes).unwrap();
    let want = oracle.run(&x, rows, spec.width).unwrap();
    let Out::Float32 { values, per_row } = &want[0].1 else {
        panic!("ONNX Runtime's output is not float32")
    };
    let got = common::read_output(&s.path("out/v5"));
    for (id, y) in got["id"].iter().zip(&got["y"]) {
        let (Cell::Int(id), Cell::Float(y)) = (id, y) else {
            panic!("id {id:?}, y {y:?}")
        };
        let expected = values[*id as usize * per_row];
        assert_eq!(
            (*y as f32).to_bits(),
            expected.to_bits(),
            "row {id}: {y} vs ONNX Runtime's {expected}"
        );
    }
    assert_eq!(got["id"].len(), rows);
}

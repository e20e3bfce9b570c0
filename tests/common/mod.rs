//! Helpers for the integration tests: run the real binary on specs written into a temp dir,
//! read what it committed, and compare it with the expected outputs that onnxruntime's Python
//! API computed (`sample_data/*/expected.parquet`).
#![allow(dead_code)]

pub mod text_models;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn sample(rel: &str) -> String {
    repo()
        .join("sample_data")
        .join(rel)
        .to_string_lossy()
        .into_owned()
}

/// A scratch directory with `sample_data` linked in, so the repo's `jobs/*.toml` run as they
/// are with their outputs landing in the scratch `out/`.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(repo().join("sample_data"), dir.path().join("sample_data"))
            .unwrap();
        std::fs::create_dir(dir.path().join("jobs")).unwrap();
        Self { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Copies `jobs/NAME.toml` from the repo into the scratch `jobs/`.
    pub fn repo_job(&self, name: &str) -> PathBuf {
        let to = self.path(&format!("jobs/{name}.toml"));
        std::fs::copy(repo().join(format!("jobs/{name}.toml")), &to).unwrap();
        to
    }

    /// Writes a spec into the scratch `jobs/`.
    pub fn job(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(&format!("jobs/{name}"));
        std::fs::write(&p, text).unwrap();
        p
    }
}

pub fn batchscore() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_batchscore"));
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        c.env(
            "ORT_DYLIB_PATH",
            repo().join(".ort/lib/libonnxruntime.so.1.31.1"),
        );
    }
    c.env("RUST_LOG", "warn");
    c
}

pub fn run(args: &[&str]) -> Output {
    batchscore().args(args).output().unwrap()
}

pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[track_caller]
pub fn assert_ok(o: &Output) {
    let (out, err) = text(o);
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{out}\nstderr:\n{err}",
        o.status.code()
    );
}

#[track_caller]
pub fn assert_exit(o: &Output, code: i32) -> String {
    let (out, err) = text(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{out}\nstderr:\n{err}"
    );
    err
}

/// A value of an output cell, normalised so that outputs and expectations compare.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Float(f64),
    Int(i64),
    Bool(bool),
    Text(String),
    List(Vec<f64>),
}

pub type Table = BTreeMap<String, Vec<Cell>>;

fn cells(a: &ArrayRef) -> Vec<Cell> {
    let n = a.len();
    let plain = match a.data_type() {
        DataType::Dictionary(_, v) => cast(a, v).unwrap(),
        _ => a.clone(),
    };
    match plain.data_type() {
        DataType::Float32 | DataType::Float64 => {
            let f = cast(&plain, &DataType::Float64).unwrap();
            let f = f.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
            (0..n)
                .map(|i| {
                    if f.is_null(i) {
                        Cell::Null
                    } else {
                        Cell::Float(f.value(i))
                    }
                })
                .collect()
        }
        t if t.is_integer() => {
            let f = cast(&plain, &DataType::Int64).unwrap();
            let f = f.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            (0..n)
                .map(|i| {
                    if f.is_null(i) {
                        Cell::Null
                    } else {
                        Cell::Int(f.value(i))
                    }
                })
                .collect()
        }
        DataType::Boolean => {
            let b = plain.as_boolean();
            (0..n)
                .map(|i| {
                    if b.is_null(i) {
                        Cell::Null
                    } else {
                        Cell::Bool(b.value(i))
                    }
                })
                .collect()
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {
            let item = Arc::new(Field::new("item", DataType::Float64, true));
            let l = cast(&plain, &DataType::List(item)).unwrap();
            let l = l.as_list::<i32>();
            (0..n)
                .map(|i| {
                    if l.is_null(i) {
                        return Cell::Null;
                    }
                    let v = l.value(i);
                    let v = v.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
                    Cell::List(v.values().to_vec())
                })
                .collect()
        }
        _ => {
            let s = cast(&plain, &DataType::Utf8).unwrap();
            let s = s.as_string::<i32>();
            (0..n)
                .map(|i| {
                    if s.is_null(i) {
                        Cell::Null
                    } else {
                        Cell::Text(s.value(i).to_string())
                    }
                })
                .collect()
        }
    }
}

fn append(table: &mut Table, batch: &RecordBatch) {
    for (f, a) in batch.schema().fields().iter().zip(batch.columns()) {
        table.entry(f.name().clone()).or_default().extend(cells(a));
    }
}

pub fn read_parquet(path: &Path) -> Table {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    // Columns come from the schema, so that a file with no rows still shows them.
    let mut t: Table = builder
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), Vec::new()))
        .collect();
    let reader = builder.build().unwrap();
    for b in reader {
        append(&mut t, &b.unwrap());
    }
    t
}

pub fn read_csv(path: &Path) -> Table {
    use datafusion::arrow::csv::ReaderBuilder;
    use datafusion::arrow::csv::reader::Format;
    let format = Format::default().with_header(true);
    let (schema, _) = format
        .infer_schema(File::open(path).unwrap(), None)
        .unwrap();
    let reader = ReaderBuilder::new(Arc::new(schema))
        .with_format(format)
        .build(File::open(path).unwrap())
        .unwrap();
    let mut t = Table::new();
    for b in reader {
        append(&mut t, &b.unwrap());
    }
    t
}

/// Reads a committed output through its manifest, checking the manifest's row counts.
pub fn read_output(dir: &Path) -> Table {
    assert!(
        dir.join("_SUCCESS").exists(),
        "no _SUCCESS in {}",
        dir.display()
    );
    let manifest = read_manifest(dir);
    let mut all = Table::new();
    let mut total = 0;
    for f in &manifest.files {
        let p = dir.join(&f.path);
        let t = if p.extension().is_some_and(|e| e == "csv") {
            read_csv(&p)
        } else {
            read_parquet(&p)
        };
        let rows = t.values().next().map_or(0, Vec::len);
        assert_eq!(rows as u64, f.rows, "row count of {}", p.display());
        total += rows;
        for (k, v) in t {
            all.entry(k).or_default().extend(v);
        }
    }
    assert_eq!(total as u64, manifest.rows);
    all
}

/// A committed output's `_manifest.json`, read as the type batchscore writes.
pub fn read_manifest(dir: &Path) -> batchscore::report::Manifest {
    let text = std::fs::read_to_string(dir.join("_manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The `_rejected/` rows of a committed output, read through its manifest.
pub fn read_rejected(dir: &Path) -> Table {
    let mut all = Table::new();
    for f in &read_manifest(dir).rejected_files {
        let p = dir.join(&f.path);
        let t = if p.extension().is_some_and(|e| e == "csv") {
            read_csv(&p)
        } else {
            read_parquet(&p)
        };
        for (k, v) in t {
            all.entry(k).or_default().extend(v);
        }
    }
    all
}

/// The text cells of a column, in order (nulls as empty strings).
pub fn texts(cells: &[Cell]) -> Vec<String> {
    cells
        .iter()
        .map(|c| match c {
            Cell::Text(t) => t.clone(),
            Cell::Null => String::new(),
            other => panic!("not text: {other:?}"),
        })
        .collect()
}

/// numpy.allclose's rule: |a - b| <= atol + rtol * |b|, with rtol = 1e-5. The small absolute
/// floor keeps probabilities near zero from failing on a float32 ulp.
pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-7 + 1e-5 * b.abs() || (a.is_nan() && b.is_nan())
}

/// Checks that `got` has exactly the keys of `expected`, each once, and that every listed
/// column matches (floats within [`close`]).
#[track_caller]
pub fn assert_matches(got: &Table, expected: &Table, key: &str, columns: &[&str]) {
    let index = |t: &Table| -> BTreeMap<String, usize> {
        let keys = t
            .get(key)
            .unwrap_or_else(|| panic!("no key column {key:?}: {:?}", t.keys()));
        let mut m = BTreeMap::new();
        for (i, k) in keys.iter().enumerate() {
            let prev = m.insert(format!("{k:?}"), i);
            assert!(prev.is_none(), "key {k:?} appears more than once");
        }
        m
    };
    let gi = index(got);
    let ei = index(expected);
    assert_eq!(gi.len(), ei.len(), "row count differs");
    assert!(
        gi.keys().eq(ei.keys()),
        "the output's keys differ from the input's"
    );
    for c in columns {
        let g = got
            .get(*c)
            .unwrap_or_else(|| panic!("output has no column {c:?}: {:?}", got.keys()));
        let e = &expected[*c];
        for (k, &ie) in &ei {
            let (a, b) = (&g[gi[k]], &e[ie]);
            let same = match (a, b) {
                (Cell::Float(x), Cell::Float(y)) => close(*x, *y),
                (Cell::List(x), Cell::List(y)) => {
                    x.len() == y.len() && x.iter().zip(y).all(|(x, y)| close(*x, *y))
                }
                _ => a == b,
            };
            assert!(same, "column {c:?}, key {k}: got {a:?}, expected {b:?}");
        }
    }
}

/// Writes `rows` rows shaped like the fraud sample (`txn_id`, `x0`..`x5`) into `path`: an
/// input large enough that a run is still going when a test interrupts it.
pub fn big_fraud_input(path: &Path, rows: usize) {
    use datafusion::arrow::array::{Float32Array, Int64Array};
    use datafusion::arrow::datatypes::Schema;
    let mut fields = vec![Field::new("txn_id", DataType::Int64, false)];
    fields.extend((0..6).map(|j| Field::new(format!("x{j}"), DataType::Float32, false)));
    let schema = Arc::new(Schema::new(fields));
    let file = File::create(path).unwrap();
    let mut w =
        datafusion::parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None).unwrap();
    let chunk = 100_000;
    for start in (0..rows).step_by(chunk) {
        let n = chunk.min(rows - start);
        let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(
            (start..start + n).map(|i| i as i64),
        ))];
        for j in 0..6 {
            cols.push(Arc::new(Float32Array::from_iter_values(
                (start..start + n).map(|i| (((i * 7 + j * 13) % 1000) as f32) / 250.0 - 2.0),
            )));
        }
        w.write(&RecordBatch::try_new(schema.clone(), cols).unwrap())
            .unwrap();
    }
    w.close().unwrap();
}

/// A child process killed when the test ends, however it ends.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (at most a minute) until `ready` says yes.
#[track_caller]
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// A cgroup v1 memory cgroup of its own under this process's, with a limit; processes
/// started with [`MemoryCgroup::command`] run inside it. Removed when dropped.
pub struct MemoryCgroup {
    pub dir: PathBuf,
}

impl MemoryCgroup {
    /// These machines run the tests as root, with cgroup v1's memory controller mounted at
    /// /sys/fs/cgroup/memory; a machine without it fails here, naming what is missing.
    pub fn new(name: &str, limit_bytes: u64) -> Self {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let own = cgroups
            .lines()
            .find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
                controllers
                    .split(',')
                    .any(|c| c == "memory")
                    .then(|| path.to_string())
            })
            .expect("no cgroup v1 memory controller in /proc/self/cgroup");
        let dir = Path::new("/sys/fs/cgroup/memory")
            .join(own.trim_start_matches('/'))
            .join(format!("batchscore-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| {
            panic!(
                "cannot create {} (root and cgroup v1 needed): {e}",
                dir.display()
            )
        });
        std::fs::write(dir.join("memory.limit_in_bytes"), limit_bytes.to_string()).unwrap();
        // Without swap accounting the file is absent; with it, swap may not stretch the limit.
        let _ = std::fs::write(
            dir.join("memory.memsw.limit_in_bytes"),
            limit_bytes.to_string(),
        );
        Self { dir }
    }

    /// The binary with `args`, started inside the cgroup (a shell joins it, then execs).
    pub fn command(&self, args: &[&str]) -> Command {
        let inner = batchscore();
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(r#"echo $$ > "$0" && exec "$@""#)
            .arg(self.dir.join("cgroup.procs"))
            .arg(inner.get_program())
            .args(args);
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => sh.env(k, v),
                None => sh.env_remove(k),
            };
        }
        sh
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Its processes have exited; an empty cgroup is removed with rmdir.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `rows` rows shaped like the fraud sample (`txn_id`, `x0`..`x5`) with values that do not
/// compress, in row groups of `group` rows: an input whose row groups weigh what they hold.
pub fn noisy_fraud_input(path: &Path, rows: usize, group: usize) {
    use datafusion::arrow::array::{Float32Array, Int64Array};
    use datafusion::arrow::datatypes::Schema;
    use datafusion::parquet::file::properties::WriterProperties;
    let mut fields = vec![Field::new("txn_id", DataType::Int64, false)];
    fields.extend((0..6).map(|j| Field::new(format!("x{j}"), DataType::Float32, false)));
    let schema = Arc::new(Schema::new(fields));
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(group))
        .set_dictionary_enabled(false)
        .build();
    let file = File::create(path).unwrap();
    let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(file, schema.clone(), Some(props))
        .unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
    };
    for start in (0..rows).step_by(group) {
        let n = group.min(rows - start);
        let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(
            (start..start + n).map(|i| i as i64),
        ))];
        for _ in 0..6 {
            cols.push(Arc::new(Float32Array::from_iter_values(
                (0..n).map(|_| next()),
            )));
        }
        w.write(&RecordBatch::try_new(schema.clone(), cols).unwrap())
            .unwrap();
    }
    w.close().unwrap();
}

/// Rows of the fraud sample, per copy.
const SAMPLE_ROWS: usize = 2500;

/// Writes `files` Parquet files of `copies` copies each of the fraud sample (its `txn_id`
/// moved by 100,000 a copy), in row groups of 500 rows; returns the expected scores, which
/// are onnxruntime's for the sample (`expected.parquet`) with the same keys moved.
pub fn replicated_fraud_input(dir: &Path, files: usize, copies: usize) -> Table {
    std::fs::create_dir_all(dir).unwrap();
    let file = File::open(sample("fraud/transactions.parquet")).unwrap();
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::Int64Type;
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::properties::WriterProperties;
    let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let schema = batches[0].schema();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(500))
        .build();
    for f in 0..files {
        let out = File::create(dir.join(format!("part-{f}.parquet"))).unwrap();
        let mut w = ArrowWriter::try_new(out, schema.clone(), Some(props.clone())).unwrap();
        for c in 0..copies {
            let shift = ((f * copies + c) * 100_000) as i64;
            for b in &batches {
                let ids = b.column(0).as_primitive::<Int64Type>();
                let moved: ArrayRef = Arc::new(Int64Array::from_iter_values(
                    ids.values().iter().map(|id| id + shift),
                ));
                let mut cols = b.columns().to_vec();
                cols[0] = moved;
                w.write(&RecordBatch::try_new(schema.clone(), cols).unwrap())
                    .unwrap();
            }
        }
        w.close().unwrap();
    }
    let oracle = read_parquet(Path::new(&sample("fraud/expected.parquet")));
    assert_eq!(oracle["txn_id"].len(), SAMPLE_ROWS);
    let mut expected = Table::new();
    for copy in 0..files * copies {
        for (column, cells) in &oracle {
            let moved = cells.iter().map(|cell| match (column.as_str(), cell) {
                ("txn_id", Cell::Int(id)) => Cell::Int(id + (copy * 100_000) as i64),
                _ => cell.clone(),
            });
            expected.entry(column.clone()).or_default().extend(moved);
        }
    }
    expected
}

/// A JSON file, parsed.
#[track_caller]
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The names in a folder, sorted.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Runs a Python oracle of `tests/oracle/` (numpy and pyarrow, independent of batchscore) with
/// `$BATCHSCORE_TEST_PYTHON` and returns what it printed, parsed as JSON (null when nothing).
#[track_caller]
pub fn oracle(script: &str, args: &[&str]) -> serde_json::Value {
    let python = std::env::var("BATCHSCORE_TEST_PYTHON").expect(
        "BATCHSCORE_TEST_PYTHON is not set: run the tests with scripts/test, which installs numpy and pyarrow",
    );
    let o = Command::new(&python)
        .arg(repo().join("tests/oracle").join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let (out, err) = text(&o);
    assert!(
        o.status.success(),
        "oracle {script} {args:?}: exit {:?}\n{out}{err}",
        o.status.code()
    );
    if out.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("oracle output {out:?}: {e}"))
    }
}

/// A JSON number, which must be there.
#[track_caller]
pub fn num(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// `got` within `rel` of `want`, relative to `want`'s size.
#[track_caller]
pub fn assert_rel(what: &str, got: f64, want: f64, rel: f64) {
    assert!(
        (got - want).abs() <= rel * want.abs().max(f64::MIN_POSITIVE),
        "{what}: got {got}, expected {want} (within {rel} relative)"
    );
}

/// `got` equals `want` as JSON, numbers within 1e-15 relative: a document batchscore read and
/// wrote again may move a float by an ulp (serde_json without `float_roundtrip` can read a
/// 17-digit number one ulp off).
#[track_caller]
pub fn assert_json_eq(got: &serde_json::Value, want: &serde_json::Value) {
    fn walk(got: &serde_json::Value, want: &serde_json::Value, at: &str) -> Result<(), String> {
        use serde_json::Value::*;
        match (got, want) {
            (Number(g), Number(w)) if g != w => {
                let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
                if (g - w).abs() <= 1e-15 * w.abs() {
                    Ok(())
                } else {
                    Err(format!("{at}: {g} != {w}"))
                }
            }
            (Array(g), Array(w)) if g.len() == w.len() => g
                .iter()
                .zip(w)
                .enumerate()
                .try_for_each(|(i, (g, w))| walk(g, w, &format!("{at}[{i}]"))),
            (Object(g), Object(w)) if g.keys().eq(w.keys()) => g
                .iter()
                .zip(w.values())
                .try_for_each(|((k, g), w)| walk(g, w, &format!("{at}.{k}"))),
            _ if got == want => Ok(()),
            _ => Err(format!("{at}: {got} != {want}")),
        }
    }
    if let Err(e) = walk(got, want, "$") {
        panic!("JSON differs at {e}\ngot:\n{got:#}\nexpected:\n{want:#}");
    }
}

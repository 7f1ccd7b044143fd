//! Export: a results file joined back to the input rows, in input order, as CSV or JSONL
//! (`batchgen export RESULTS --input INPUT [--format csv|jsonl] [-o FILE]`).
//!
//! # Joining
//!
//! A row finds its record by the id `run` gave it, resolved the way `run` resolves it: the
//! `--id-field` value (or `custom_id`) through [`input::row_id`]; the 1-based row number when
//! no row has an id; and, for the rows `run --skip-invalid` turned into `invalid_input`
//! records, `line:N` (an unusable id, or no id while other rows have one) and `ID#line:N` (the
//! later row of a duplicate id), all by [`crate::dispatch::record_id`], the code `run` names
//! records with. When RESULTS holds several records for an id (a resumed run not yet
//! compacted), the latest line wins, as it does for resume (an `invalid_input` record never
//! replaces an `ok` one); lines are read by [`resume::classify`], as resume reads them.
//!
//! # Output
//!
//! Every readable input row appears once, in input order, input columns first:
//!
//! - **CSV**: the header is the input's columns (a CSV input's header in its order, first
//!   occurrence of a repeated name; for a JSONL input, the union of the rows' top-level keys
//!   in first-seen order), then `status`, `content`, `parsed` (only when some record in
//!   RESULTS has one, i.e. a `--json` or `--json-schema` run), `error_kind`, `error_message`,
//!   `input_tokens`, `output_tokens`, `reasoning_tokens`, `cost`, `finish_reason`. Strings
//!   are written as they are; other values (numbers, booleans, objects, arrays, `parsed`) as
//!   compact JSON; `null` and absent values as empty fields; `cost` as a plain decimal
//!   rounded to 12 places. A row without a record has every result column empty. A result
//!   column whose name the input already uses gets `_` prepended until it is unique
//!   (`_status`).
//! - **JSONL**: each input row as an object (keys in the column order above), plus `result`:
//!   the row's latest record exactly as RESULTS has it, or `null` when it has none (`_result`
//!   if the input uses `result`). A JSONL row's values pass through `serde_json`, so a number
//!   is written in its shortest form (`1.50` becomes `1.5`).
//!
//! `--format` defaults to the extension of `-o` (`.csv`, `.jsonl`, `.ndjson`), then
//! to the input's format. Without `-o` (or with `-o -`) the export goes to stdout; a `.gz`
//! name is gzip-compressed. A file is written beside its final path and renamed into place
//! only when the export succeeds, so a failed export leaves nothing half-written, and `-o`
//! may not name RESULTS or INPUT.
//!
//! # Problems
//!
//! Exit 2 names what and where: a missing or unreadable file (RESULTS or INPUT), stdin as
//! INPUT (the input is read more than once), a gzip-compressed RESULTS (it is read by
//! seeking), and input rows `run` would reject before sending: unreadable rows (invalid JSON
//! or CSV, invalid UTF-8), unusable, missing or duplicate ids, each reported as `file:line:
//! reason` before anything is written. `--skip-invalid` exports anyway, as after
//! `run --skip-invalid`: unreadable rows are left out (their lines are named), the others
//! are joined to their `invalid_input` records. A file that changes during the export is
//! an error too. Exit 3: the output cannot be written. A closed stdout (`| head`) ends the
//! export quietly.
//!
//! In RESULTS, a line that is not a record is skipped with a warning naming it; a last line
//! without its newline that is not a whole record (torn by a crash) is ignored with a note.
//! A summary line goes to stderr, with a warning when records match no input row (a
//! different INPUT or `--id-field` than the run's).
//!
//! # Memory and streaming
//!
//! Neither file is held in memory. Pass 1 reads RESULTS once and keeps, per id, a 128-bit
//! [`id_key`] and the byte offset of its latest record (24 bytes an entry, about 30 to 55
//! with the hash table's slack); beside it, on a second thread, the input's columns are
//! collected (keys only). Pass 2 reads INPUT to check it and learn how ids resolve, marking
//! in the same table which ids it has seen (duplicates). Pass 3 reads INPUT again and, for
//! each row, seeks to its record and reads that one line, writing the output through a
//! buffer as it goes. The seeks follow completion order, which is close to input order at
//! moderate concurrency, so most land in the 64 KiB read buffer; in the worst case it is one
//! random read per row. Memory is the table plus one row and one record at a time (and the
//! distinct column names of a JSONL input).

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use crate::Exit;
use crate::cli::ExportArgs;
use crate::input::format::format_of;
// The domain format: `settings` converts the clap one into it.
use crate::input::format::Format as InputFormat;
use crate::input::{self, Item, RawRow};
use crate::output::resume::{self, id_key};
use crate::settings::{InputSpec, default_output};

const READ_BUFFER: usize = 256 * 1024;
/// Small enough that a seek far away wastes little, large enough to hold the neighbours a
/// record was written with.
const SEEK_BUFFER: usize = 64 * 1024;
const WRITE_BUFFER: usize = 256 * 1024;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const STDOUT: &str = "<stdout>";
/// Problems and warnings named one by one, at most; the rest are counted.
const MAX_PROBLEMS: usize = crate::dispatch::MAX_PROBLEMS;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Bad usage, an unreadable file or invalid input: exit 2. The message names the file.
    #[error("{0}")]
    Usage(String),
    /// The output could not be written: exit 3.
    #[error("cannot write {target}: {source}")]
    Output { target: String, source: io::Error },
}

impl ExportError {
    pub fn exit(&self) -> Exit {
        match self {
            ExportError::Usage(_) => Exit::Usage,
            ExportError::Output { .. } => Exit::Stopped,
        }
    }
}

fn usage(message: impl Into<String>) -> ExportError {
    ExportError::Usage(message.into())
}

/// An export, resolved from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub results: PathBuf,
    pub input: InputSpec,
    pub id_field: String,
    pub format: InputFormat,
    /// `None` writes to stdout.
    pub output: Option<PathBuf>,
    /// Compress the output (`-o` ends with `.gz`).
    pub gzip: bool,
    pub skip_invalid: bool,
}

impl Options {
    pub fn resolve(args: &ExportArgs) -> Result<Options, ExportError> {
        if args.input.as_os_str() == "-" {
            return Err(usage(
                "--input -: export reads the input more than once, so it must be a file",
            ));
        }
        let input_format = match args.input_format.map(InputFormat::from) {
            Some(f) => f,
            None => format_of(&args.input).ok_or_else(|| {
                usage(format!(
                    "{}: cannot tell the format from the extension (.jsonl, .csv, optionally \
                     .gz); use --input-format jsonl|csv",
                    args.input.display()
                ))
            })?,
        };
        if args.id_field.trim().is_empty() {
            return Err(usage("--id-field must name a field"));
        }
        let output = args
            .output
            .clone()
            .filter(|p| p.as_os_str() != "-" && !p.as_os_str().is_empty());
        let format = args
            .format
            .map(InputFormat::from)
            .or_else(|| output.as_deref().and_then(format_of))
            .unwrap_or(input_format);
        let gzip = output
            .as_deref()
            .and_then(Path::file_name)
            .is_some_and(|n| n.to_string_lossy().to_ascii_lowercase().ends_with(".gz"));
        Ok(Options {
            results: args
                .results
                .clone()
                .unwrap_or_else(|| default_output(&args.input)),
            input: InputSpec {
                path: Some(args.input.clone()),
                format: input_format,
            },
            id_field: args.id_field.clone(),
            format,
            output,
            gzip,
            skip_invalid: args.skip_invalid,
        })
    }

    fn output_name(&self) -> String {
        match &self.output {
            Some(p) => p.display().to_string(),
            None => STDOUT.to_string(),
        }
    }
}

/// What an export did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub target: String,
    pub format: &'static str,
    /// Rows written.
    pub rows: u64,
    /// Rows whose latest record is `ok`.
    pub ok: u64,
    /// Rows whose latest record is anything else.
    pub failed: u64,
    /// Rows without a record.
    pub missing: u64,
    /// Unreadable input rows left out (`--skip-invalid`).
    pub left_out: u64,
    /// Ids with a record in RESULTS that no input row has.
    pub unmatched: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exported {} rows to {} ({}): {} ok, {} failed, {} without a result",
            self.rows, self.target, self.format, self.ok, self.failed, self.missing
        )?;
        if self.left_out > 0 {
            write!(f, "; {} unreadable rows left out", self.left_out)?;
        }
        if self.unmatched > 0 {
            write!(
                f,
                "\nwarning: {} records in the results match no input row (is this the input \
                 and --id-field the run used?)",
                self.unmatched
            )?;
        }
        Ok(())
    }
}

/// `batchgen export`: runs it and reports on stderr.
pub fn run(args: &ExportArgs) -> Exit {
    let mut stderr = io::stderr().lock();
    let outcome = Options::resolve(args).and_then(|opts| export(&opts, &mut stderr));
    match outcome {
        Ok(report) => {
            let _ = writeln!(stderr, "{report}");
            Exit::Ok
        }
        // The reader of stdout went away (`| head`): what it wanted was written.
        Err(ExportError::Output { target, source })
            if source.kind() == io::ErrorKind::BrokenPipe && target == STDOUT =>
        {
            Exit::Ok
        }
        Err(e) => {
            let _ = writeln!(stderr, "error: {e}");
            e.exit()
        }
    }
}

/// Runs an export; warnings and problems go to `diag` as they are found.
pub fn export(opts: &Options, diag: &mut dyn Write) -> Result<Report, ExportError> {
    let input_name = opts.input.display();
    let input_path = opts.input.path.as_deref().unwrap_or(Path::new("-"));
    if let Some(out) = &opts.output {
        for (path, what) in [
            (opts.results.as_path(), "the results file"),
            (input_path, "the input"),
        ] {
            if crate::settings::same_file(out, path) {
                return Err(usage(format!(
                    "-o {}: that is {what}; write the export to another file",
                    out.display()
                )));
            }
        }
    }

    // RESULTS and the input's column names are independent reads: side by side.
    let (results, columns) = std::thread::scope(|s| {
        let columns = s.spawn(|| read_columns(input_path, opts.input.format));
        let results = scan_results(&opts.results, diag);
        (results, columns.join())
    });
    let mut results = results?;
    let columns = columns
        .map_err(|_| usage(format!("{input_name}: reading the columns failed")))?
        .map_err(|e| usage(format!("cannot read {input_name}: {e}")))?;
    let plan = check_input(opts, &mut results.index, diag)?;

    let target = opts.output_name();
    let layout = Layout::new(columns, opts.format, results.has_parsed);
    let mut records = RecordReader::open(&opts.results)?;
    let mut report = Report {
        target: target.clone(),
        format: match opts.format {
            InputFormat::Csv => "csv",
            InputFormat::Jsonl => "jsonl",
        },
        ..Report::default()
    };
    let mut job = Job {
        opts,
        plan: &plan,
        index: &results.index,
        layout: &layout,
        records: &mut records,
        report: &mut report,
    };
    match &opts.output {
        None => {
            let mut out = BufWriter::with_capacity(WRITE_BUFFER, io::stdout().lock());
            job.write(&mut out, &target)?;
            out.flush().map_err(|source| ExportError::Output {
                target: target.clone(),
                source,
            })?;
        }
        Some(path) => write_file(path, opts.gzip, &target, |out| job.write(out, &target))?,
    }
    report.unmatched = results.latest.saturating_sub(report.ok + report.failed);
    Ok(report)
}

/// Writes a file through a temporary file beside it, renamed into place only on success.
fn write_file(
    path: &Path,
    gzip: bool,
    target: &str,
    body: impl FnOnce(&mut dyn Write) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let failed = |source: io::Error| ExportError::Output {
        target: target.to_string(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs_err::create_dir_all(dir).map_err(failed)?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".batchgen-export-");
    // A temporary file is private by default; the export is an ordinary file (umask applies).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(dir).map_err(failed)?;
    {
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, tmp.as_file_mut());
        if gzip {
            let mut gz = flate2::write::GzEncoder::new(&mut out, flate2::Compression::default());
            body(&mut gz)?;
            gz.finish().map_err(failed)?;
        } else {
            body(&mut out)?;
        }
        out.flush().map_err(failed)?;
    }
    tmp.persist(path).map_err(|e| failed(e.error))?;
    Ok(())
}

/// Opens a file for reading, decompressing gzip when the first bytes say so (as
/// [`input::open`] does).
fn open_text(path: &Path) -> io::Result<Box<dyn BufRead + Send>> {
    let file = fs_err::File::open(path)?;
    let mut buffered = BufReader::with_capacity(READ_BUFFER, file);
    if buffered.fill_buf()?.starts_with(&GZIP_MAGIC) {
        Ok(Box::new(BufReader::with_capacity(
            READ_BUFFER,
            flate2::bufread::MultiGzDecoder::new(buffered),
        )))
    } else {
        Ok(Box::new(buffered))
    }
}

// ---- Pass 1: the latest record of each id ----

/// An [`id_key`] as two words, so that a table entry takes 24 bytes rather than 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key(u64, u64);

impl Key {
    fn of(id: &str) -> Key {
        let k = id_key(id);
        Key(k as u64, (k >> 64) as u64)
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Already a good hash: one word of it is the table's hash.
        state.write_u64(self.0);
    }
}

/// Passes [`Key`]'s word through.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
}

/// Id key -> byte offset of the id's latest record, or [`NO_RECORD`]; [`OK`] marks an ok
/// latest record, [`SEEN`] ids an input row has (pass 2).
type Index = HashMap<Key, u64, BuildHasherDefault<KeyHasher>>;
const SEEN: u64 = 1 << 63;
const OK: u64 = 1 << 62;
const NO_RECORD: u64 = OK - 1;

/// What pass 1 learnt from RESULTS.
struct Results {
    index: Index,
    /// Ids with a record.
    latest: u64,
    /// Whether some record has `parsed`.
    has_parsed: bool,
}

/// Whether a record has `parsed` (a `--json` or `--json-schema` run).
#[derive(Deserialize)]
struct Parsed {
    #[serde(default)]
    parsed: Option<IgnoredAny>,
}

fn scan_results(path: &Path, diag: &mut dyn Write) -> Result<Results, ExportError> {
    let name = path.display();
    let file = fs_err::File::open(path).map_err(|e| usage(e.to_string()))?;
    let unreadable = |e: io::Error| usage(format!("cannot read {name}: {e}"));
    let mut reader = BufReader::with_capacity(READ_BUFFER, file);
    if reader
        .fill_buf()
        .map_err(unreadable)?
        .starts_with(&GZIP_MAGIC)
    {
        return Err(usage(format!(
            "{name}: the results file is gzip-compressed; export reads it by seeking, so \
             decompress it first (gunzip -k)"
        )));
    }
    let mut results = Results {
        index: Index::default(),
        latest: 0,
        has_parsed: false,
    };
    let mut line = Vec::with_capacity(4096);
    let (mut offset, mut line_no, mut skipped) = (0u64, 0u64, 0u64);
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(unreadable)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        // Lines are read as the resume scan reads them, and the latest record chosen alike.
        match resume::classify(&line) {
            resume::Line::Record(head) => {
                let flagged = offset | if head.ok { OK } else { 0 };
                match results.index.entry(Key::of(&head.id)) {
                    Entry::Occupied(mut e) => {
                        if head.supersedes(*e.get() & OK != 0) {
                            e.insert(flagged);
                        }
                    }
                    Entry::Vacant(e) => {
                        e.insert(flagged);
                    }
                }
                if !results.has_parsed && head.ok {
                    results.has_parsed =
                        serde_json::from_slice::<Parsed>(&line).is_ok_and(|p| p.parsed.is_some());
                }
            }
            resume::Line::Blank => {}
            // A crash cut the last record short: `run` would drop it and send the row again.
            resume::Line::NotRecord if line.last() != Some(&b'\n') => {
                let _ = writeln!(
                    diag,
                    "{name}:{line_no}: ignored a torn last line ({n} bytes) left by an interrupted run"
                );
            }
            resume::Line::NotRecord => {
                skipped += 1;
                if skipped <= MAX_PROBLEMS as u64 {
                    let _ = writeln!(diag, "{name}:{line_no}: not a result record; skipped");
                }
            }
        }
        offset += n as u64;
    }
    if skipped > MAX_PROBLEMS as u64 {
        let _ = writeln!(
            diag,
            "{name}: ... and {} more lines that are not result records",
            skipped - MAX_PROBLEMS as u64
        );
    }
    results.latest = results.index.len() as u64;
    Ok(results)
}

// ---- The input's columns ----

/// Column names in order, each once.
#[derive(Debug, Default)]
struct Columns {
    names: Vec<String>,
    index: HashMap<String, usize>,
}

impl Columns {
    fn add(&mut self, name: &str) {
        if !self.index.contains_key(name) {
            self.index.insert(name.to_string(), self.names.len());
            self.names.push(name.to_string());
        }
    }

    /// Forgets the names added since there were `len`.
    fn truncate(&mut self, len: usize) {
        for name in self.names.drain(len..) {
            self.index.remove(&name);
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// `base`, or `base` with `_` prepended until no column has the name.
    fn free_name(&self, base: &str) -> String {
        let mut name = base.to_string();
        while self.contains(&name) {
            name.insert(0, '_');
        }
        name
    }
}

fn read_columns(path: &Path, format: InputFormat) -> io::Result<Columns> {
    match format {
        InputFormat::Csv => csv_columns(path),
        InputFormat::Jsonl => jsonl_columns(path),
    }
}

/// A CSV input's header, read as the input reader reads it. A header it cannot use is
/// reported by pass 2.
fn csv_columns(path: &Path) -> io::Result<Columns> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(open_text(path)?);
    let mut record = csv::ByteRecord::new();
    let mut columns = Columns::default();
    if reader.read_byte_record(&mut record).unwrap_or(false) {
        for field in &record {
            if let Ok(name) = std::str::from_utf8(field) {
                columns.add(name.trim_start_matches('\u{feff}'));
            }
        }
    }
    Ok(columns)
}

/// The top-level keys of a JSONL input's rows in first-seen order, read from the text (the
/// parsed rows keep keys sorted). Lines that are not objects add nothing.
fn jsonl_columns(path: &Path) -> io::Result<Columns> {
    let mut reader = open_text(path)?;
    let mut columns = Columns::default();
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let before = columns.names.len();
        let mut de = serde_json::Deserializer::from_slice(&line);
        let read = KeysOf(&mut columns)
            .deserialize(&mut de)
            .and_then(|()| de.end());
        if read.is_err() {
            columns.truncate(before);
        }
    }
    Ok(columns)
}

/// Adds an object's keys to the columns, skipping its values.
struct KeysOf<'c>(&'c mut Columns);

impl<'de> DeserializeSeed<'de> for KeysOf<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for KeysOf<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(KeyInto(&mut *self.0))?.is_some() {
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

/// Adds one key to the columns without allocating for a name already known.
struct KeyInto<'c>(&'c mut Columns);

impl<'de> DeserializeSeed<'de> for KeyInto<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyInto<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<(), E> {
        self.0.add(key);
        Ok(())
    }
}

// ---- Pass 2: the input checked, and how its ids resolve ----

/// How the rows' ids resolve, mirroring `dispatch::validate`.
#[derive(Debug, Default)]
struct Plan {
    /// Whether rows carry their own ids (otherwise the row number is the id).
    own_ids: bool,
    /// Row numbers of the later rows of duplicate ids.
    duplicates: HashSet<u64>,
}

fn check_input(
    opts: &Options,
    index: &mut Index,
    diag: &mut dyn Write,
) -> Result<Plan, ExportError> {
    let name = opts.input.display();
    let unreadable = |e: io::Error| usage(format!("cannot read {name}: {e}"));
    let mut plan = Plan::default();
    let mut problems: Vec<(u64, String)> = Vec::new();
    let mut problem_count = 0u64;
    let mut problem = |line: u64, reason: String| {
        problem_count += 1;
        if problems.len() < MAX_PROBLEMS {
            problems.push((line, reason));
        }
    };
    let (mut with_id, mut without_id) = (0u64, 0u64);
    let mut without_id_lines = Vec::new();
    for item in input::open(&opts.input).map_err(unreadable)? {
        let row = match item.map_err(unreadable)? {
            Item::Row(row) => row,
            Item::Bad(p) => {
                problem(p.line, p.reason);
                continue;
            }
        };
        match input::row_id(&row.fields, &opts.id_field) {
            Err(reason) => problem(row.line, reason),
            Ok(Some(id)) => {
                with_id += 1;
                let slot = index.entry(Key::of(&id)).or_insert(NO_RECORD);
                if *slot & SEEN != 0 {
                    problem(
                        row.line,
                        format!("duplicate id `{id}` (an earlier row has it)"),
                    );
                    plan.duplicates.insert(row.number);
                } else {
                    *slot |= SEEN;
                }
            }
            Ok(None) => {
                without_id += 1;
                if without_id_lines.len() < MAX_PROBLEMS {
                    without_id_lines.push(row.line);
                }
            }
        }
    }
    plan.own_ids = with_id > 0;
    if plan.own_ids && without_id > 0 {
        for line in without_id_lines {
            problem(
                line,
                format!("no `{}` field, while other rows have one", opts.id_field),
            );
        }
        problem_count += without_id.saturating_sub(MAX_PROBLEMS as u64);
    }
    if problem_count == 0 {
        return Ok(plan);
    }
    problems.sort_by_key(|(line, _)| *line);
    for (line, reason) in &problems {
        let _ = writeln!(diag, "{name}:{line}: {reason}");
    }
    if problem_count > problems.len() as u64 {
        let _ = writeln!(
            diag,
            "... and {} more problems",
            problem_count - problems.len() as u64
        );
    }
    if !opts.skip_invalid {
        return Err(usage(format!(
            "{name}: {problem_count} invalid rows; nothing was exported (--skip-invalid \
             exports the rest, as after `run --skip-invalid`)"
        )));
    }
    let _ = writeln!(
        diag,
        "--skip-invalid: rows that cannot be read are left out; the others are joined to their \
         invalid_input records"
    );
    Ok(plan)
}

/// The id `run` gave a row (see the module docs), by the code `run` names records with.
fn join_id(row: &RawRow, id_field: &str, plan: &Plan) -> String {
    let own = input::row_id(&row.fields, id_field);
    let duplicate = plan.duplicates.contains(&row.number);
    crate::dispatch::record_id(row.line, row.number, &own, plan.own_ids, duplicate)
}

// ---- Pass 3: the rows written, each with its record ----

/// Result columns of the CSV output, in order; `parsed` follows `content` when present.
const RESULT_COLUMNS: [&str; 9] = [
    "status",
    "content",
    "error_kind",
    "error_message",
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost",
    "finish_reason",
];

/// The shape of the output.
struct Layout {
    columns: Columns,
    format: InputFormat,
    with_parsed: bool,
    /// CSV: the result columns' names; JSONL: the result key alone.
    result_names: Vec<String>,
}

impl Layout {
    fn new(columns: Columns, format: InputFormat, with_parsed: bool) -> Layout {
        let mut result_names = Vec::new();
        match format {
            InputFormat::Csv => {
                for c in RESULT_COLUMNS {
                    result_names.push(columns.free_name(c));
                    if c == "content" && with_parsed {
                        result_names.push(columns.free_name("parsed"));
                    }
                }
            }
            InputFormat::Jsonl => result_names.push(columns.free_name("result")),
        }
        Layout {
            columns,
            format,
            with_parsed,
            result_names,
        }
    }
}

/// Reads records by offset, seeking within the buffer when it can.
struct RecordReader {
    reader: BufReader<fs_err::File>,
    /// Offset of the reader's next byte.
    pos: u64,
    line: Vec<u8>,
}

impl RecordReader {
    fn open(path: &Path) -> Result<RecordReader, ExportError> {
        let file = fs_err::File::open(path).map_err(|e| usage(e.to_string()))?;
        Ok(RecordReader {
            reader: BufReader::with_capacity(SEEK_BUFFER, file),
            pos: 0,
            line: Vec::with_capacity(4096),
        })
    }

    fn read_at(&mut self, offset: u64) -> io::Result<&[u8]> {
        // Offsets are below 2^62 (the table's flag bits), so the difference fits.
        self.reader.seek_relative(offset as i64 - self.pos as i64)?;
        self.line.clear();
        let n = self.reader.read_until(b'\n', &mut self.line)?;
        self.pos = offset + n as u64;
        Ok(&self.line)
    }
}

/// The fields of a record that the CSV output shows; anything else is ignored.
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(default)]
    status: Value,
    #[serde(default)]
    content: Value,
    #[serde(default)]
    parsed: Value,
    #[serde(default)]
    error: Value,
    #[serde(default)]
    usage: Value,
    #[serde(default)]
    cost: Value,
    #[serde(default)]
    finish_reason: Value,
}

/// A value as CSV text: strings as they are, `null` as nothing, the rest as compact JSON.
fn text(value: &Value) -> Cow<'_, str> {
    input::field_text(value).unwrap_or(Cow::Borrowed(""))
}

/// Decimal places of a cost: far below any price per token, and enough to hide the float
/// noise of a sum (`0.00008919999999999999`).
const COST_DECIMALS: usize = 12;

/// A cost as a plain decimal (`0.0000892`, never `8.92e-5`).
fn cost_text(value: &Value) -> Cow<'_, str> {
    match value.as_f64() {
        Some(c) if value.is_number() && c.is_finite() => {
            let fixed = format!("{c:.COST_DECIMALS$}");
            let trimmed = fixed.trim_end_matches('0').trim_end_matches('.');
            Cow::Owned(match trimmed {
                "" | "-" | "-0" => "0".to_string(),
                t => t.to_string(),
            })
        }
        _ => text(value),
    }
}

impl Record<'_> {
    fn columns<'r>(&'r self, with_parsed: bool, out: &mut Vec<Cow<'r, str>>) {
        out.push(text(&self.status));
        out.push(text(&self.content));
        if with_parsed {
            out.push(match &self.parsed {
                Value::Null => Cow::Borrowed(""),
                v => Cow::Owned(v.to_string()),
            });
        }
        out.push(text(&self.error["kind"]));
        out.push(text(&self.error["message"]));
        out.push(text(&self.usage["input_tokens"]));
        out.push(text(&self.usage["output_tokens"]));
        out.push(text(&self.usage["reasoning_tokens"]));
        out.push(cost_text(&self.cost));
        out.push(text(&self.finish_reason));
    }
}

/// Everything pass 3 reads and updates.
struct Job<'a> {
    opts: &'a Options,
    plan: &'a Plan,
    index: &'a Index,
    layout: &'a Layout,
    records: &'a mut RecordReader,
    report: &'a mut Report,
}

impl Job<'_> {
    fn write(&mut self, out: &mut dyn Write, target: &str) -> Result<(), ExportError> {
        let failed = |source: io::Error| ExportError::Output {
            target: target.to_string(),
            source,
        };
        let input_name = self.opts.input.display();
        let results_name = self.opts.results.display().to_string();
        let unreadable = |e: io::Error| usage(format!("cannot read {input_name}: {e}"));
        let changed = |what: &str| {
            usage(format!(
                "{what} changed while it was being exported; export again"
            ))
        };
        let mut sink = match self.layout.format {
            InputFormat::Csv => {
                let mut w = csv::WriterBuilder::new().from_writer(out);
                let header = self
                    .layout
                    .columns
                    .names
                    .iter()
                    .chain(&self.layout.result_names);
                w.write_record(header).map_err(|e| failed(csv_io(e)))?;
                Sink::Csv(Box::new(w))
            }
            InputFormat::Jsonl => Sink::Jsonl(out),
        };
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        for item in input::open(&self.opts.input).map_err(unreadable)? {
            let row = match item.map_err(unreadable)? {
                Item::Row(row) => row,
                Item::Bad(_) if self.opts.skip_invalid => {
                    self.report.left_out += 1;
                    continue;
                }
                Item::Bad(_) => return Err(changed(&input_name)),
            };
            let id = join_id(&row, &self.opts.id_field, self.plan);
            let offset = self
                .index
                .get(&Key::of(&id))
                .map(|slot| slot & !(SEEN | OK))
                .filter(|&o| o != NO_RECORD);
            let line = match offset {
                Some(o) => Some(
                    self.records
                        .read_at(o)
                        .map_err(|e| usage(format!("cannot read {results_name}: {e}")))?,
                ),
                None => None,
            };
            let record = match line {
                Some(l) => match serde_json::from_slice::<Record>(l) {
                    Ok(r) if r.id == id => Some((r, trim_line(l))),
                    _ => return Err(changed(&results_name)),
                },
                None => None,
            };
            self.report.rows += 1;
            match &record {
                Some((r, _)) if r.status == "ok" => self.report.ok += 1,
                Some(_) => self.report.failed += 1,
                None => self.report.missing += 1,
            }
            match &mut sink {
                Sink::Csv(w) => {
                    let mut fields: Vec<Cow<str>> = Vec::with_capacity(
                        self.layout.columns.names.len() + self.layout.result_names.len(),
                    );
                    for name in &self.layout.columns.names {
                        fields.push(row.fields.get(name).map_or(Cow::Borrowed(""), text));
                    }
                    match &record {
                        Some((r, _)) => r.columns(self.layout.with_parsed, &mut fields),
                        None => fields.resize(
                            fields.len() + self.layout.result_names.len(),
                            Cow::Borrowed(""),
                        ),
                    }
                    w.write_record(fields.iter().map(|f| f.as_bytes()))
                        .map_err(|e| failed(csv_io(e)))?;
                }
                Sink::Jsonl(out) => {
                    buf.clear();
                    jsonl_row(
                        &row,
                        self.layout,
                        record.as_ref().map(|(_, raw)| *raw),
                        &mut buf,
                    );
                    out.write_all(&buf).map_err(failed)?;
                }
            }
        }
        if let Sink::Csv(mut w) = sink {
            w.flush().map_err(failed)?;
        }
        Ok(())
    }
}

/// Where pass 3 writes.
enum Sink<'w> {
    Csv(Box<csv::Writer<&'w mut dyn Write>>),
    Jsonl(&'w mut dyn Write),
}

/// The I/O error inside a CSV writer's error (the only kind it has when writing bytes).
fn csv_io(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::other(format!("{other:?}")),
    }
}

/// A record's line without its line end.
fn trim_line(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &line[..end]
}

/// One JSONL output line: the row's fields in column order, then the record (or `null`).
fn jsonl_row(row: &RawRow, layout: &Layout, record: Option<&[u8]>, buf: &mut Vec<u8>) {
    let push = |buf: &mut Vec<u8>, key: &str, value: &Value| {
        buf.push(if buf.is_empty() { b'{' } else { b',' });
        // Writing JSON into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *buf, key);
        buf.push(b':');
        let _ = serde_json::to_writer(&mut *buf, value);
    };
    let mut written = 0;
    for name in &layout.columns.names {
        if let Some(value) = row.fields.get(name) {
            push(buf, name, value);
            written += 1;
        }
    }
    if written < row.fields.len() {
        // Keys the column scan did not see (the file changed in between): still exported.
        for (name, value) in &row.fields {
            if !layout.columns.contains(name) {
                push(buf, name, value);
            }
        }
    }
    buf.push(if buf.is_empty() { b'{' } else { b',' });
    let _ = serde_json::to_writer(&mut *buf, &layout.result_names[0]);
    buf.push(b':');
    buf.extend_from_slice(record.unwrap_or(b"null"));
    buf.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("tmp");
        f.write_all(text).expect("write");
        f
    }

    #[test]
    fn the_latest_record_wins_and_odd_lines_are_named() {
        let head = "{\"id\":\"a\",\"status\":\"error\"}\nnot json\n\
                    {\"id\":\"b\",\"status\":\"ok\",\"parsed\":{\"x\":1}}\n\n";
        let a_at = head.len() as u64;
        let f = file(
            format!("{head}{{\"id\":\"a\",\"status\":\"ok\"}}\n{{\"id\":\"c\",\"sta").as_bytes(),
        );
        let mut diag = Vec::new();
        let r = scan_results(f.path(), &mut diag).expect("scan");
        let diag = String::from_utf8(diag).expect("utf8");
        assert_eq!(r.latest, 2);
        assert!(r.has_parsed);
        assert_eq!(r.index.get(&Key::of("a")), Some(&(a_at | OK)));
        assert_eq!(r.index.get(&Key::of("c")), None);
        assert!(diag.contains(":2: not a result record; skipped"), "{diag}");
        assert!(
            diag.contains(":6: ignored a torn last line (14 bytes)"),
            "{diag}"
        );

        let mut reader = RecordReader::open(f.path()).expect("open");
        let b = reader
            .read_at(r.index[&Key::of("b")] & !OK)
            .expect("read")
            .to_vec();
        assert!(b.starts_with(b"{\"id\":\"b\""));
        let a = reader.read_at(a_at).expect("read");
        assert_eq!(a, b"{\"id\":\"a\",\"status\":\"ok\"}\n");
    }

    #[test]
    fn a_whole_last_record_without_its_newline_counts() {
        let f = file(b"{\"id\":\"a\",\"status\":\"ok\"}");
        let r = scan_results(f.path(), &mut Vec::new()).expect("scan");
        assert_eq!(r.latest, 1);
        assert!(!r.has_parsed);
    }

    #[test]
    fn gzip_results_are_refused() {
        let f = file(&[0x1f, 0x8b, 0, 0]);
        let e = scan_results(f.path(), &mut Vec::new()).err();
        assert!(matches!(e, Some(ExportError::Usage(m)) if m.contains("gzip")));
    }

    #[test]
    fn jsonl_columns_keep_first_seen_order_and_skip_bad_lines() {
        let f = file(
            b"{\"prompt\":\"a\",\"id\":1,\"meta\":{\"z\":1}}\n\
              {\"zeta\":1,\"bad\":\n\
              \n\
              [1]\n\
              {\"lang\":\"fr\",\"prompt\":\"b\"}\n",
        );
        let c = jsonl_columns(f.path()).expect("columns");
        assert_eq!(c.names, ["prompt", "id", "meta", "lang"]);
    }

    #[test]
    fn csv_columns_are_the_header() {
        let f = file("\u{feff}id,text,id,note\n1,a,b,c\n".as_bytes());
        let c = csv_columns(f.path()).expect("columns");
        assert_eq!(c.names, ["id", "text", "note"]);
    }

    #[test]
    fn result_names_step_aside_for_input_columns() {
        let mut c = Columns::default();
        for n in ["id", "status", "_status", "result"] {
            c.add(n);
        }
        let csv = Layout::new(c, InputFormat::Csv, true);
        assert_eq!(csv.result_names[0], "__status");
        assert_eq!(csv.result_names[1..3], ["content", "parsed"]);
        let mut c = Columns::default();
        c.add("result");
        assert_eq!(
            Layout::new(c, InputFormat::Jsonl, false).result_names,
            ["_result"]
        );
    }

    #[test]
    fn ids_resolve_as_run_resolves_them() {
        let row = |fields: Value, line, number| RawRow {
            line,
            number,
            fields: fields.as_object().cloned().unwrap_or_default(),
        };
        let mut plan = Plan {
            own_ids: true,
            duplicates: HashSet::from([3]),
        };
        let r = row(serde_json::json!({"id": 7}), 2, 1);
        assert_eq!(join_id(&r, "id", &plan), "7");
        let r = row(serde_json::json!({"custom_id": "x"}), 2, 1);
        assert_eq!(join_id(&r, "id", &plan), "x");
        let r = row(serde_json::json!({"id": "a"}), 5, 3);
        assert_eq!(join_id(&r, "id", &plan), "a#line:5");
        let r = row(serde_json::json!({"id": [1]}), 9, 4);
        assert_eq!(join_id(&r, "id", &plan), "line:9");
        let r = row(serde_json::json!({"prompt": "p"}), 9, 4);
        assert_eq!(join_id(&r, "id", &plan), "line:9");
        plan.own_ids = false;
        assert_eq!(join_id(&r, "id", &plan), "4");
    }

    #[test]
    fn record_columns_render_as_text() {
        let line = br#"{"id":"a","status":"error","error":{"kind":"timeout","message":"slow"},"cost":0.0000688,"usage":{"input_tokens":5,"output_tokens":2,"reasoning_tokens":0},"finish_reason":null,"parsed":{"k":[1,2]}}"#;
        let r: Record = serde_json::from_slice(line).expect("record");
        let mut out = Vec::new();
        r.columns(true, &mut out);
        assert_eq!(
            out,
            [
                "error",
                "",
                "{\"k\":[1,2]}",
                "timeout",
                "slow",
                "5",
                "2",
                "0",
                "0.0000688",
                ""
            ]
        );
        assert_eq!(trim_line(b"{}\r\n"), b"{}");
        let cost = |v: Value| cost_text(&v).into_owned();
        assert_eq!(cost(serde_json::json!(8.919999999999999e-5)), "0.0000892");
        assert_eq!(cost(serde_json::json!(0)), "0");
        assert_eq!(cost(serde_json::json!(12.5)), "12.5");
        assert_eq!(cost(serde_json::json!(1e-15)), "0");
        assert_eq!(cost(Value::Null), "");
    }

    #[test]
    fn formats_default_from_the_output_then_the_input() {
        use crate::cli::InputFormat as Flag;
        let args = |input: &str, output: Option<&str>, format: Option<Flag>| ExportArgs {
            results: None,
            input: PathBuf::from(input),
            input_format: None,
            id_field: "id".into(),
            format,
            output: output.map(PathBuf::from),
            skip_invalid: false,
        };
        let o = Options::resolve(&args("rows.csv.gz", None, None)).expect("ok");
        assert_eq!(o.format, InputFormat::Csv);
        assert_eq!(o.input.format, InputFormat::Csv);
        assert_eq!(o.results, PathBuf::from("rows.results.jsonl"));
        assert!(o.output.is_none());
        let o = Options::resolve(&args("rows.csv", Some("out.jsonl.gz"), None)).expect("ok");
        assert_eq!((o.format, o.gzip), (InputFormat::Jsonl, true));
        let o = Options::resolve(&args("rows.jsonl", Some("out.txt"), None)).expect("ok");
        assert_eq!(o.format, InputFormat::Jsonl);
        let o = Options::resolve(&args("rows.jsonl", Some("-"), Some(Flag::Csv))).expect("ok");
        assert_eq!((o.format, o.output), (InputFormat::Csv, None));
        assert!(Options::resolve(&args("-", None, None)).is_err());
        assert!(Options::resolve(&args("rows.txt", None, None)).is_err());
    }
}

//! The GNU ddrescue mapfile text format (as ddrescue 1.27 reads and writes it), pure text <-> struct.
//!
//! Holds [`Mapfile`] (status line + map + blkcache's metadata), [`parse`] and [`format()`].
//! Must never do I/O (that is `persist.rs`) and never panic on any input: every malformed line
//! becomes a [`MapError::Parse`] naming the file and the line.
//!
//! Reading follows ddrescue's `Mapfile::read_mapfile`: blank lines and leading blanks are skipped; a
//! `#` at the start of a line or after a blank starts a comment running to the end of the line; the
//! first data line is the status line `pos phase [pass]` (the pass is missing in files written
//! before ddrescue 1.22), every later one a block line `pos size status`. Numbers are read like C's
//! `%lli`: decimal, hexadecimal with `0x`, octal with a leading `0`, an optional `+`.
//! blkcache is stricter than ddrescue where ddrescue would silently accept nonsense: it rejects
//! trailing junk after the fields, data lines longer than ddrescue's 127-byte line buffer (which
//! ddrescue would silently truncate), numbers past `i64::MAX`, empty blocks (but for ddrescue's
//! lone `0 0 ?` of an empty input), and a first block not starting at 0 (blkcache maps always
//! cover the whole source).
//! blkcache's own metadata lives in `# blkcache: key=value` comment lines, which ddrescue ignores.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::filemap::{FileMap, Run, Status};

/// Longest data line ddrescue reads whole (its `my_fgets` buffer holds 127 bytes with the newline).
const MAX_DATA_LINE: usize = 126;

/// What ddrescue was doing when it wrote the mapfile (the status line's second field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// `?`: copying non-tried blocks.
    NonTried,
    /// `*`: trimming non-trimmed blocks.
    NonTrimmed,
    /// `/`: scraping non-scraped blocks.
    NonScraped,
    /// `-`: retrying bad sectors.
    BadSector,
    /// `F`: filling the blocks of a given status (ddrescue's fill mode).
    Filtered,
    /// `G`: generating an approximate mapfile (ddrescue's generate mode).
    Generating,
    /// `+`: finished.
    Finished,
}

impl Phase {
    /// The status-line character for this phase.
    pub fn as_char(self) -> char {
        match self {
            Phase::NonTried => '?',
            Phase::NonTrimmed => '*',
            Phase::NonScraped => '/',
            Phase::BadSector => '-',
            Phase::Filtered => 'F',
            Phase::Generating => 'G',
            Phase::Finished => '+',
        }
    }

    /// The phase a status-line character stands for, if any.
    pub fn from_char(c: char) -> Option<Phase> {
        match c {
            '?' => Some(Phase::NonTried),
            '*' => Some(Phase::NonTrimmed),
            '/' => Some(Phase::NonScraped),
            '-' => Some(Phase::BadSector),
            'F' => Some(Phase::Filtered),
            'G' => Some(Phase::Generating),
            '+' => Some(Phase::Finished),
            _ => None,
        }
    }
}

/// blkcache's own metadata, kept in `# blkcache: key=value` comment lines (ddrescue ignores them),
/// plus ddrescue's header comments, kept so a loaded map is written back with its history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// Path of the source media when the cache was made (`source=`).
    pub source: Option<String>,
    /// Source size in bytes (`size=`).
    pub size: Option<u64>,
    /// Source logical sector size (`sector_size=`).
    pub sector_size: Option<u32>,
    /// Source identity (model/serial/volume id...), so a cache is never reused for other media (`identity=`).
    pub identity: Option<String>,
    /// blkcache version that last wrote the file (`version=`; [`format()`] always writes its own).
    pub version: Option<String>,
    /// Other `# blkcache:` keys, kept as read so newer files survive a load and save.
    pub extra: BTreeMap<String, String>,
    /// `# Command line: ...` header comment.
    pub command_line: Option<String>,
    /// `# Start time: ...` header comment.
    pub start_time: Option<String>,
    /// `# Current time: ...` header comment (set by the saver).
    pub current_time: Option<String>,
}

/// A whole mapfile: the status line, the block list and the metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapfile {
    /// Status line: position ddrescue (or blkcache) was at.
    pub current_pos: u64,
    /// Status line: phase.
    pub current_status: Phase,
    /// Status line: pass (1 to 5 in ddrescue 1.22 and later); `None` when the file has none.
    pub current_pass: Option<u32>,
    /// The blocks.
    pub map: FileMap,
    /// blkcache metadata and header comments.
    pub meta: Meta,
}

impl Mapfile {
    /// A fresh map of `size` non-tried bytes, at position 0, copying, pass 1.
    pub fn new(size: u64, meta: Meta) -> Mapfile {
        Mapfile {
            current_pos: 0,
            current_status: Phase::NonTried,
            current_pass: Some(1),
            map: FileMap::new(size),
            meta,
        }
    }
}

/// Errors of reading and writing mapfiles.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// A line of a mapfile is malformed or inconsistent with the previous ones.
    #[error("{}:{line}: {what}", path.display())]
    Parse {
        /// The mapfile.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// Reading, writing, syncing or renaming a mapfile failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done ("read mapfile", "fsync directory of", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl MapError {
    fn parse(path: &Path, line: usize, what: impl Into<String>) -> MapError {
        MapError::Parse {
            path: path.to_path_buf(),
            line,
            what: what.into(),
        }
    }
}

/// Splits a raw line into its data part (leading/trailing blanks and comment removed) and its
/// comment (text after the `#`, if the line has one).
fn split_comment(raw: &str) -> (&str, Option<&str>) {
    let line = raw.trim_start_matches(is_blank);
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || is_blank(bytes[i - 1] as char)) {
            return (line[..i].trim_end_matches(is_blank), Some(&line[i + 1..]));
        }
    }
    (line.trim_end_matches(is_blank), None)
}

/// C's `isspace` in the "C" locale.
fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// Reads a number as C's `%lli` does (decimal, `0x` hex, leading-`0` octal, optional sign),
/// rejecting negatives and values past `i64::MAX` (ddrescue stores them in a `long long`).
fn parse_num(tok: &str) -> Result<u64, String> {
    let digits = tok.strip_prefix('+').unwrap_or(tok);
    if digits.starts_with('-') {
        return Err(format!("negative number '{tok}'"));
    }
    let (radix, body) = if let Some(h) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        (16, h)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return Err(format!("bad number '{tok}'"));
    }
    match u64::from_str_radix(body, radix) {
        Ok(v) if v <= i64::MAX as u64 => Ok(v),
        _ => Err(format!("number '{tok}' is too large")),
    }
}

/// Reads a single-character field.
fn parse_char(tok: &str) -> Option<char> {
    let mut it = tok.chars();
    let c = it.next()?;
    it.next().is_none().then_some(c)
}

fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut it = v.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(o) => out.push(o),
            None => out.push('\\'),
        }
    }
    out
}

/// Comments are one line: escape what would end or confuse one.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// Records what a comment line says, if it is one blkcache knows.
fn read_comment(meta: &mut Meta, comment: &str, path: &Path, line: usize) -> Result<(), MapError> {
    let c = comment.trim_start_matches(' ');
    if let Some(kv) = c.strip_prefix("blkcache:") {
        let kv = kv.trim_matches(is_blank);
        let Some((k, v)) = kv.split_once('=') else {
            return Err(MapError::parse(
                path,
                line,
                format!("blkcache metadata '{kv}' is not key=value"),
            ));
        };
        let v = unescape(v);
        let num = |v: &str| {
            parse_num(v).map_err(|e| MapError::parse(path, line, format!("blkcache {k}: {e}")))
        };
        match k {
            "source" => meta.source = Some(v),
            "size" => meta.size = Some(num(&v)?),
            "sector_size" => {
                let n = num(&v)?;
                meta.sector_size = Some(u32::try_from(n).map_err(|_| {
                    MapError::parse(path, line, format!("blkcache sector_size {n} is too large"))
                })?);
            }
            "identity" => meta.identity = Some(v),
            "version" => meta.version = Some(v),
            _ => {
                meta.extra.insert(k.to_string(), v);
            }
        }
    } else if let Some(v) = c.strip_prefix("Command line:") {
        meta.command_line = Some(v.trim_matches(is_blank).to_string());
    } else if let Some(v) = c.strip_prefix("Start time:") {
        meta.start_time = Some(v.trim_matches(is_blank).to_string());
    } else if let Some(v) = c.strip_prefix("Current time:") {
        meta.current_time = Some(v.trim_matches(is_blank).to_string());
    }
    Ok(())
}

/// Parses mapfile text; `origin` only names the file in errors.
pub fn parse(text: &str, origin: &Path) -> Result<Mapfile, MapError> {
    let mut meta = Meta::default();
    let mut status: Option<(u64, Phase, Option<u32>)> = None;
    let mut runs: Vec<Run> = Vec::new();
    let mut end = 0u64;
    let mut empty_block_line: Option<usize> = None;

    for (idx, raw) in text.split('\n').enumerate() {
        let lineno = idx + 1;
        let err = |what: String| MapError::parse(origin, lineno, what);
        let (data, comment) = split_comment(raw);
        if let Some(c) = comment {
            read_comment(&mut meta, c, origin, lineno)?;
        }
        if data.is_empty() {
            continue;
        }
        if data.len() > MAX_DATA_LINE {
            return Err(err(format!(
                "line too long ({} bytes; ddrescue reads at most {MAX_DATA_LINE})",
                data.len()
            )));
        }
        if data.contains('\0') {
            return Err(err("NUL byte in line".into()));
        }
        // At most 4 fields are looked at: a fourth is already an error.
        let mut fields = data.split(is_blank).filter(|t| !t.is_empty());
        let mut toks: [&str; 4] = [""; 4];
        let mut n = 0;
        for t in fields.by_ref().take(4) {
            toks[n] = t;
            n += 1;
        }
        let toks = &toks[..n];
        if status.is_none() {
            if !(2..=3).contains(&toks.len()) {
                return Err(err(format!(
                    "bad status line '{data}' (expected: current_pos current_status [current_pass])"
                )));
            }
            let pos = parse_num(toks[0]).map_err(&err)?;
            let phase = parse_char(toks[1])
                .and_then(Phase::from_char)
                .ok_or_else(|| err(format!("unknown current_status '{}'", toks[1])))?;
            let pass = match toks.get(2) {
                None => None,
                Some(t) => {
                    let n = parse_num(t).map_err(&err)?;
                    match u32::try_from(n) {
                        Ok(p) if p >= 1 && p <= i32::MAX as u32 => Some(p),
                        _ => return Err(err(format!("bad current_pass '{t}'"))),
                    }
                }
            };
            status = Some((pos, phase, pass));
            continue;
        }
        if toks.len() != 3 {
            return Err(err(format!(
                "bad block line '{data}' (expected: pos size status)"
            )));
        }
        let pos = parse_num(toks[0]).map_err(&err)?;
        let size = parse_num(toks[1]).map_err(&err)?;
        let st = parse_char(toks[2])
            .and_then(Status::from_char)
            .ok_or_else(|| err(format!("unknown block status '{}'", toks[2])))?;
        if size == 0 {
            // ddrescue writes `0 0 ?` as the only block of an empty input.
            if pos == 0 && runs.is_empty() && empty_block_line.is_none() {
                empty_block_line = Some(lineno);
                continue;
            }
            return Err(err("block of size 0".into()));
        }
        if empty_block_line.is_some() {
            return Err(err("block after the empty block of an empty map".into()));
        }
        if pos != end {
            return Err(err(if runs.is_empty() {
                format!("first block starts at {pos:#x}, not at 0")
            } else if pos < end {
                format!("block at {pos:#x} overlaps the previous one (which ends at {end:#x})")
            } else {
                format!("gap before block at {pos:#x} (the previous one ends at {end:#x})")
            }));
        }
        end = match pos.checked_add(size) {
            Some(e) if e <= i64::MAX as u64 => e,
            _ => return Err(err(format!("block {pos:#x} + {size:#x} ends past 2^63"))),
        };
        runs.push(Run {
            pos,
            len: size,
            status: st,
        });
    }

    let Some((current_pos, current_status, current_pass)) = status else {
        let lines = text.split('\n').count();
        return Err(MapError::parse(origin, lines, "no status line"));
    };
    // Runs were checked contiguous from 0 and non-empty above.
    let Some(map) = FileMap::from_runs(runs) else {
        return Err(MapError::parse(origin, 0, "inconsistent blocks"));
    };
    Ok(Mapfile {
        current_pos,
        current_status,
        current_pass,
        map,
        meta,
    })
}

/// The mapfile text, laid out as ddrescue 1.27 writes it, with blkcache's metadata comments.
pub fn format(m: &Mapfile) -> String {
    let mut out = String::with_capacity(400 + m.map.extent_count() * 32);
    format_into(m, &mut out);
    out
}

/// [`format()`] into an existing buffer (appends).
pub fn format_into(m: &Mapfile, out: &mut String) {
    format_stamped(m, m.meta.current_time.as_deref(), out)
}

/// [`format_into`], writing `current_time` as the `# Current time:` comment instead of the one in
/// `m.meta` (the saver stamps the time of the save without copying the map).
pub fn format_stamped(m: &Mapfile, current_time: Option<&str>, out: &mut String) {
    let meta = &m.meta;
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "# Mapfile. Created by blkcache version {} (GNU ddrescue 1.27 mapfile format)",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(c) = &meta.command_line {
        let _ = writeln!(out, "# Command line: {}", escape(c));
    }
    if let Some(t) = &meta.start_time {
        let _ = writeln!(out, "# Start time:   {}", escape(t));
    }
    if let Some(t) = current_time {
        let _ = writeln!(out, "# Current time: {}", escape(t));
    }
    let mut kv = |k: &str, v: &str| {
        let _ = writeln!(out, "# blkcache: {k}={}", escape(v));
    };
    kv("version", env!("CARGO_PKG_VERSION"));
    if let Some(v) = &meta.source {
        kv("source", v);
    }
    if let Some(v) = meta.size {
        kv("size", &v.to_string());
    }
    if let Some(v) = meta.sector_size {
        kv("sector_size", &v.to_string());
    }
    if let Some(v) = &meta.identity {
        kv("identity", v);
    }
    for (k, v) in &meta.extra {
        // Keys are written back only if they read back as the same key.
        if !k.is_empty() && !k.contains(['=', '\n', '\r', '#']) {
            kv(k, v);
        }
    }
    let _ = writeln!(out, "# current_pos  current_status  current_pass");
    match m.current_pass {
        Some(p) => {
            let _ = writeln!(
                out,
                "0x{:08X}     {}               {}",
                m.current_pos,
                m.current_status.as_char(),
                p
            );
        }
        None => {
            let _ = writeln!(
                out,
                "0x{:08X}     {}",
                m.current_pos,
                m.current_status.as_char()
            );
        }
    }
    let _ = writeln!(out, "#      pos        size  status");
    for r in m.map.iter() {
        let _ = writeln!(
            out,
            "0x{:08X}  0x{:08X}  {}",
            r.pos,
            r.len,
            r.status.as_char()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(text: &str) -> Result<Mapfile, MapError> {
        parse(text, Path::new("t.map"))
    }

    fn err(text: &str) -> String {
        p(text).unwrap_err().to_string()
    }

    #[test]
    fn reads_what_ddrescue_writes() {
        let text = "# Mapfile. Created by GNU ddrescue version 1.27\n\
# Command line: ddrescue -q -H dmg img out out.map\n\
# Start time:   2026-11-22 01:09:38\n\
# Current time: 2026-11-22 01:09:38\n\
# Finished\n\
# current_pos  current_status  current_pass\n\
0x00004400     +               1\n\
#      pos        size  status\n\
0x00000000  0x00004000  +\n\
0x00004000  0x00000400  -\n\
0x00004400  0x0000BC00  +\n";
        let m = p(text).unwrap();
        assert_eq!(m.current_pos, 0x4400);
        assert_eq!(m.current_status, Phase::Finished);
        assert_eq!(m.current_pass, Some(1));
        assert_eq!(m.map.size(), 0x10000);
        assert_eq!(m.map.status_at(0x4000), Some(Status::BadSector));
        assert_eq!(
            m.meta.command_line.as_deref(),
            Some("ddrescue -q -H dmg img out out.map")
        );
        assert_eq!(m.meta.start_time.as_deref(), Some("2026-11-22 01:09:38"));
    }

    #[test]
    fn writes_the_ddrescue_layout() {
        let mut m = Mapfile::new(0x10000, Meta::default());
        m.map.set(0, 0x4000, Status::Finished);
        m.map.set(0x4000, 0x400, Status::BadSector);
        m.current_pos = 0x4400;
        m.current_status = Phase::NonTrimmed;
        m.current_pass = Some(2);
        let text = format(&m);
        let data: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("# Mapfile") && !l.starts_with("# blkcache"))
            .collect();
        assert_eq!(
            data,
            vec![
                "# current_pos  current_status  current_pass",
                "0x00004400     *               2",
                "#      pos        size  status",
                "0x00000000  0x00004000  +",
                "0x00004000  0x00000400  -",
                "0x00004400  0x0000BC00  ?",
            ]
        );
        assert!(text.starts_with("# Mapfile. Created by blkcache version "));
        assert_eq!(p(&text).unwrap().map, m.map);
    }

    #[test]
    fn status_line_without_pass_is_pre_1_22() {
        let m = p("0 ?\n0 512 ?\n").unwrap();
        assert_eq!(m.current_pass, None);
        assert!(format(&m).contains("\n0x00000000     ?\n"));
    }

    #[test]
    fn numbers_are_read_like_percent_lli() {
        let m = p("  +010   -  3 # octal pos\n0 0x10 +\n16 010 ?\n24 +8 / # dec\n").unwrap();
        assert_eq!(m.current_pos, 8);
        assert_eq!(m.current_pass, Some(3));
        assert_eq!(m.map.size(), 32);
        assert_eq!(m.map.status_at(16), Some(Status::NonTried));
        assert_eq!(m.map.status_at(31), Some(Status::NonScraped));
    }

    #[test]
    fn comments_blank_lines_and_crlf() {
        let m = p("\n\n# hi\n\t0x0 ? 1\t# c\r\n\r\n0x0 0x200 + #x\r\n").unwrap();
        assert_eq!(m.map.size(), 0x200);
    }

    #[test]
    fn metadata_round_trips() {
        let meta = Meta {
            source: Some("/dev/sr0 with\nnewline \\ and # hash".into()),
            size: Some(1234),
            sector_size: Some(2048),
            identity: Some("HL-DT-ST serial=K0123".into()),
            version: None,
            extra: [("future_key".to_string(), "v=1".to_string())].into(),
            command_line: Some("blkcache serve /dev/sr0".into()),
            start_time: Some("2024-01-01 00:00:00".into()),
            current_time: Some("2024-01-01 00:00:01".into()),
        };
        let m = Mapfile::new(1234, meta.clone());
        let back = p(&format(&m)).unwrap();
        let mut want = meta;
        want.version = Some(env!("CARGO_PKG_VERSION").into());
        assert_eq!(back.meta, want);
        assert_eq!(back.map, m.map);
    }

    #[test]
    fn empty_input_map() {
        let m = p("0 ? 1\n0 0 ?\n").unwrap();
        assert_eq!(m.map.size(), 0);
        let m = p("0 ? 1\n").unwrap();
        assert_eq!(m.map.size(), 0);
    }

    #[test]
    fn errors_name_file_and_line() {
        assert_eq!(err(""), "t.map:1: no status line");
        assert_eq!(err("# only\n# comments\n"), "t.map:3: no status line");
        assert_eq!(
            err("0 ? 1\n0 0x100 +\n0x80 0x100 -\n"),
            "t.map:3: block at 0x80 overlaps the previous one (which ends at 0x100)"
        );
        assert_eq!(
            err("0 ? 1\n0 0x100 +\n0x180 0x100 -\n"),
            "t.map:3: gap before block at 0x180 (the previous one ends at 0x100)"
        );
        assert_eq!(
            err("0 ? 1\n0x100 0x100 -\n"),
            "t.map:2: first block starts at 0x100, not at 0"
        );
        assert_eq!(
            err("0 ? 1\n0 0x100 x\n"),
            "t.map:2: unknown block status 'x'"
        );
        assert_eq!(
            err("0 ? 1\n0 0x100 F\n"),
            "t.map:2: unknown block status 'F'"
        );
        assert_eq!(err("0 X 1\n"), "t.map:1: unknown current_status 'X'");
        assert_eq!(err("0 ? 0\n"), "t.map:1: bad current_pass '0'");
        assert_eq!(
            err("0 ? 1\n0 0x100 + junk\n"),
            "t.map:2: bad block line '0 0x100 + junk' (expected: pos size status)"
        );
        assert_eq!(
            err("0 ? 1\n0 0x100 +x\n"),
            "t.map:2: unknown block status '+x'"
        );
        assert_eq!(
            err("0 ? 1\n0 0x100 +\n0x100 0 -\n"),
            "t.map:3: block of size 0"
        );
        assert_eq!(err("0 ? 1\n0 -5 +\n"), "t.map:2: negative number '-5'");
        assert_eq!(err("0 ? 1\n0 0x +\n"), "t.map:2: bad number '0x'");
        assert_eq!(err("0 ? 1\n0 09 +\n"), "t.map:2: bad number '09'");
        assert_eq!(
            err("0 ? 1\n0 0x8000000000000000 +\n"),
            "t.map:2: number '0x8000000000000000' is too large"
        );
        assert_eq!(
            err("0 ? 1\n0x7000000000000000 0x7000000000000000 +\n"),
            "t.map:2: first block starts at 0x7000000000000000, not at 0"
        );
        assert_eq!(
            err("0 ? 1\n0 0x7000000000000000 +\n0x7000000000000000 0x7000000000000000 +\n"),
            "t.map:3: block 0x7000000000000000 + 0x7000000000000000 ends past 2^63"
        );
        let long = format!("0 ? 1\n0 {}1 +\n", "0".repeat(200));
        assert!(err(&long).starts_with("t.map:2: line too long"));
        assert_eq!(
            err("0 ? 1\n0 0 ?\n0 5 +\n"),
            "t.map:3: block after the empty block of an empty map"
        );
        assert_eq!(
            err("# blkcache: nokey\n0 ? 1\n"),
            "t.map:1: blkcache metadata 'nokey' is not key=value"
        );
        assert_eq!(
            err("# blkcache: size=big\n0 ? 1\n"),
            "t.map:1: blkcache size: bad number 'big'"
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_any_text(s in ".{0,400}") {
            let _ = p(&s);
        }

        #[test]
        fn never_panics_on_mutated_maps(
            seed in prop::collection::vec((0usize..200, any::<u8>()), 0..8),
        ) {
            let mut bytes = b"# c\n0x100 / 2\n0x0 0x100 +\n0x100 0x80 -\n0x180 0x80 ?\n".to_vec();
            for (i, b) in seed {
                let i = i % (bytes.len() + 1);
                if b % 3 == 0 && i < bytes.len() { bytes.remove(i); } else { bytes.insert(i, b); }
            }
            if let Ok(m) = p(&String::from_utf8_lossy(&bytes)) {
                // Whatever parses, formats and parses back to the same map.
                prop_assert_eq!(p(&format(&m)).unwrap().map, m.map);
            }
        }
    }
}

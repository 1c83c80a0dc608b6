//! The map as a picture, like ddrescueview: the media cut into equal cells, each shown in the
//! colour of the worst status inside it, with a legend. For a terminal (80 columns; colours, or
//! the mapfile's own status characters where colour is not wanted) and as SVG for a report or a
//! web page. Pure: a map in, text out.

use std::fmt::Write as _;

use super::filemap::{FileMap, Status};
use super::stats::{format_num, format_percentage};

/// Cells per row of the terminal picture (75 columns with its labels).
pub const COLUMNS: usize = 64;
/// Rows of the terminal picture.
pub const ROWS: usize = 16;

/// Worst first: the status a cell shows when its bytes have several.
const WORST_FIRST: [Status; 5] = [
    Status::BadSector,
    Status::NonScraped,
    Status::NonTrimmed,
    Status::NonTried,
    Status::Finished,
];

/// The status shown for each of `cells` equal parts of the map (the last ones empty when the
/// map has fewer bytes than cells): the worst status of its bytes.
pub fn cells(map: &FileMap, cells: usize) -> Vec<Option<Status>> {
    let size = map.size();
    (0..cells as u64)
        .map(|i| {
            let lo = (u128::from(size) * u128::from(i) / cells as u128) as u64;
            let hi = (u128::from(size) * u128::from(i + 1) / cells as u128) as u64;
            if lo >= hi {
                return None;
            }
            let mut seen = [false; 5];
            for r in map.runs(lo, hi - lo) {
                seen[r.status as usize] = true;
            }
            WORST_FIRST.into_iter().find(|s| seen[*s as usize])
        })
        .collect()
}

/// The label and colours of a status: (name, ANSI 256-colour code, SVG colour), as
/// ddrescueview shows them.
fn style(s: Status) -> (&'static str, u8, &'static str) {
    match s {
        Status::Finished => ("rescued", 34, "#2ca02c"),
        Status::NonTried => ("non-tried", 240, "#5a5a5a"),
        Status::NonTrimmed => ("non-trimmed", 226, "#f0d000"),
        Status::NonScraped => ("non-scraped", 33, "#2070e0"),
        Status::BadSector => ("bad-sector", 196, "#e02020"),
    }
}

/// Legend order: as `ddrescuelog -t` lists the statuses.
const LEGEND: [Status; 5] = [
    Status::Finished,
    Status::NonTried,
    Status::NonTrimmed,
    Status::NonScraped,
    Status::BadSector,
];

/// The terminal picture: rows of cells labelled with their first byte, then a legend with each
/// status's size and share. `colour`: ANSI colours (a full block per cell); otherwise each cell
/// is the status's mapfile character (`+ ? * / -`) and the legend says so.
pub fn to_text(map: &FileMap, colour: bool) -> String {
    let size = map.size();
    let grid = cells(map, COLUMNS * ROWS);
    let mut out = String::new();
    let per_cell = size.div_ceil((COLUMNS * ROWS) as u64);
    let _ = writeln!(
        out,
        "map of {}B, {}B per cell, worst status shown:",
        format_num(size),
        format_num(per_cell)
    );
    for (row, cells) in grid.chunks(COLUMNS).enumerate() {
        let first = (u128::from(size) * (row * COLUMNS) as u128 / (COLUMNS * ROWS) as u128) as u64;
        let _ = write!(out, "{:>9} ", format!("{}B", format_num(first)));
        for c in cells {
            match c {
                None => out.push(' '),
                Some(s) if colour => {
                    let _ = write!(out, "\x1b[38;5;{}m\u{2588}\x1b[0m", style(*s).1);
                }
                Some(s) => out.push(s.as_char()),
            }
        }
        out.push('\n');
    }
    let stats = map.stats();
    for (i, s) in LEGEND.into_iter().enumerate() {
        let (name, code, _) = style(s);
        let key = if colour {
            format!("\x1b[38;5;{code}m\u{2588}\x1b[0m")
        } else {
            s.as_char().to_string()
        };
        let c = stats.get(s);
        let _ = write!(
            out,
            "{}{key} {name} {}B ({})",
            if i % 2 == 0 { "  " } else { "   " },
            format_num(c.bytes),
            format_percentage(c.bytes, size).trim()
        );
        if i % 2 == 1 {
            out.push('\n');
        }
    }
    out.push('\n');
    out
}

/// The same picture as SVG: `COLUMNS` x `ROWS` squares, and the legend below.
pub fn to_svg(map: &FileMap, title: &str) -> String {
    const CELL: usize = 10;
    let grid = cells(map, COLUMNS * ROWS);
    let width = COLUMNS * CELL + 20;
    let height = ROWS * CELL + 110;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<title>{}</title>"#, escape(title));
    let _ = writeln!(
        out,
        r##"<rect width="{width}" height="{height}" fill="#ffffff"/>"##
    );
    let _ = writeln!(out, r#"<text x="10" y="16">{}</text>"#, escape(title));
    for (i, c) in grid.iter().enumerate() {
        let Some(s) = c else { continue };
        let (x, y) = (10 + (i % COLUMNS) * CELL, 26 + (i / COLUMNS) * CELL);
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="{y}" width="{}" height="{}" fill="{}"/>"#,
            CELL - 1,
            CELL - 1,
            style(*s).2
        );
    }
    let stats = map.stats();
    for (i, s) in LEGEND.into_iter().enumerate() {
        let (name, _, fill) = style(s);
        let c = stats.get(s);
        let y = 26 + ROWS * CELL + 14 + i * 16;
        let _ = writeln!(
            out,
            r#"<rect x="10" y="{}" width="10" height="10" fill="{fill}"/><text x="26" y="{}">{name}: {}B ({})</text>"#,
            y - 9,
            y,
            format_num(c.bytes),
            format_percentage(c.bytes, map.size()).trim()
        );
    }
    out.push_str("</svg>\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_shows_the_worst_status_inside_it() {
        let mut m = FileMap::new(1000);
        m.set(0, 1000, Status::Finished);
        m.set(130, 1, Status::BadSector);
        m.set(300, 50, Status::NonTried);
        m.set(330, 10, Status::NonTrimmed);
        let c = cells(&m, 10);
        assert_eq!(c[0], Some(Status::Finished));
        assert_eq!(c[1], Some(Status::BadSector));
        assert_eq!(c[3], Some(Status::NonTrimmed));
        assert!(c[4..].iter().all(|s| *s == Some(Status::Finished)));
        // More cells than bytes: the extra cells are empty.
        let c = cells(&FileMap::new(3), 6);
        assert_eq!(c.iter().filter(|s| s.is_some()).count(), 3);
    }

    #[test]
    fn plain_text_fits_80_columns_and_uses_status_characters() {
        let mut m = FileMap::new(1 << 30);
        m.set(0, 1 << 29, Status::Finished);
        m.set(1 << 28, 4096, Status::BadSector);
        let t = to_text(&m, false);
        assert!(t.lines().all(|l| l.chars().count() <= 80), "{t}");
        assert!(!t.contains('\x1b'));
        assert!(t.contains('-') && t.contains('+') && t.contains('?'));
        assert!(t.contains("bad-sector 4096 B"), "{t}");
        let svg = to_svg(&m, "disc <1>");
        assert!(svg.starts_with("<svg") && svg.contains("disc &lt;1&gt;"));
        assert_eq!(svg.matches("<rect").count(), 1 + COLUMNS * ROWS + 5);
    }
}

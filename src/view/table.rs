//! Summaries → text: the tables `pennant get` prints. Columns as `flux get` for Flux's kinds
//! (`NAME REVISION SUSPENDED READY MESSAGE`, `NAMESPACE` first with `-A`, `kind/name` in
//! sections when several kinds are listed, as `flux get all`), with kubectl's `AGE` before the
//! message; for Canaries Flagger's printer columns (`STATUS WEIGHT LASTTRANSITIONTIME`, as
//! `kubectl get canaries`) with `FAILEDCHECKS`, `AGE` and the `Promoted` message. Cells are
//! left-aligned, three spaces apart, as `kubectl get`. PURE.

use super::summary::{Kind, Summary};

/// A column of a `pennant get` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    Namespace,
    Name,
    Revision,
    Suspended,
    Ready,
    Status,
    Weight,
    FailedChecks,
    LastTransitionTime,
    Age,
    Message,
}

impl Column {
    /// The header, as `flux get`/`kubectl get` print it.
    pub fn header(self) -> &'static str {
        match self {
            Column::Namespace => "NAMESPACE",
            Column::Name => "NAME",
            Column::Revision => "REVISION",
            Column::Suspended => "SUSPENDED",
            Column::Ready => "READY",
            Column::Status => "STATUS",
            Column::Weight => "WEIGHT",
            Column::FailedChecks => "FAILEDCHECKS",
            Column::LastTransitionTime => "LASTTRANSITIONTIME",
            Column::Age => "AGE",
            Column::Message => "MESSAGE",
        }
    }
}

/// The columns of `kind`'s table; `NAMESPACE` first when listing all namespaces.
pub fn columns(kind: Kind, all_namespaces: bool) -> Vec<Column> {
    use Column::*;
    let mut c = if all_namespaces {
        vec![Namespace]
    } else {
        vec![]
    };
    c.extend_from_slice(match kind {
        Kind::Canary => &[
            Name,
            Status,
            Weight,
            FailedChecks,
            LastTransitionTime,
            Age,
            Message,
        ][..],
        _ => &[Name, Revision, Suspended, Ready, Age, Message][..],
    });
    c
}

/// How a cell is coloured on a terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Plain,
    /// Ready, or a Canary Succeeded/Initialized: green.
    Good,
    /// Not ready, or a Canary Failed: red.
    Bad,
    /// Unknown, or a Canary mid-run: yellow.
    Busy,
}

impl Tone {
    fn ansi(self) -> Option<&'static str> {
        match self {
            Tone::Plain => None,
            Tone::Good => Some("\x1b[32m"),
            Tone::Bad => Some("\x1b[31m"),
            Tone::Busy => Some("\x1b[33m"),
        }
    }
}

/// One cell: its text and tone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    pub text: String,
    pub tone: Tone,
}

/// Tone of a Ready status (`True`, `False`, `Unknown`).
pub fn ready_tone(ready: &str) -> Tone {
    match ready {
        "True" => Tone::Good,
        "False" => Tone::Bad,
        _ => Tone::Busy,
    }
}

/// Tone of a Canary phase.
pub fn phase_tone(phase: &str) -> Tone {
    match phase {
        "Succeeded" | "Initialized" => Tone::Good,
        "Failed" => Tone::Bad,
        "" => Tone::Plain,
        _ => Tone::Busy,
    }
}

/// The cell of `s` in column `c`; `with_kind` writes the name as `kind/name` (lower-case kind,
/// as `flux get all`). Messages are kept whole, their line breaks turned into spaces.
pub fn cell(s: &Summary, c: Column, with_kind: bool) -> Cell {
    let plain = |text: String| Cell {
        text,
        tone: Tone::Plain,
    };
    match c {
        Column::Namespace => plain(s.namespace.clone()),
        Column::Name if with_kind => plain(format!(
            "{}/{}",
            s.kind.as_str().to_ascii_lowercase(),
            s.name
        )),
        Column::Name => plain(s.name.clone()),
        Column::Revision => plain(s.revision.clone()),
        Column::Suspended => plain(if s.suspended { "True" } else { "False" }.into()),
        Column::Ready => Cell {
            text: s.ready.clone(),
            tone: ready_tone(&s.ready),
        },
        Column::Status => Cell {
            text: s.phase.clone(),
            tone: phase_tone(&s.phase),
        },
        Column::Weight => plain(s.weight.map(|w| w.to_string()).unwrap_or_default()),
        Column::FailedChecks => plain(s.failed_checks.map(|w| w.to_string()).unwrap_or_default()),
        Column::LastTransitionTime => plain(s.last_transition_time.clone().unwrap_or_default()),
        Column::Age => plain(s.age.clone()),
        Column::Message => plain(s.message.replace(['\r', '\n'], " ")),
    }
}

/// A table: header and rows of cells, one column set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    /// The table of `rows` (all of one kind) in that kind's columns.
    pub fn of(kind: Kind, rows: &[&Summary], all_namespaces: bool, with_kind: bool) -> Table {
        let cols = columns(kind, all_namespaces);
        Table {
            header: cols.iter().map(|c| c.header().to_string()).collect(),
            rows: rows
                .iter()
                .map(|s| cols.iter().map(|&c| cell(s, c, with_kind)).collect())
                .collect(),
        }
    }

    /// Width of each column (characters of the widest cell or header).
    pub fn widths(&self) -> Vec<usize> {
        let mut w: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate() {
                w[i] = w[i].max(c.text.chars().count());
            }
        }
        w
    }

    /// The table as text: header then rows, one per line, each ending in `\n`.
    pub fn render(&self, colour: bool) -> String {
        let widths = self.widths();
        let header: Vec<Cell> = self
            .header
            .iter()
            .map(|h| Cell {
                text: h.clone(),
                tone: Tone::Plain,
            })
            .collect();
        let mut out = render_row(&header, &widths, false);
        for row in &self.rows {
            out += &render_row(row, &widths, colour);
        }
        out
    }
}

/// One line of cells padded to `widths` (the last cell unpadded), three spaces apart, ending in
/// `\n`; coloured when `colour` (the padding stays outside the colour codes, so columns line
/// up).
pub fn render_row(cells: &[Cell], widths: &[usize], colour: bool) -> String {
    let mut line = String::new();
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            line += "   ";
        }
        match c.tone.ansi().filter(|_| colour) {
            Some(code) => {
                line += code;
                line += &c.text;
                line += "\x1b[0m";
            }
            None => line += &c.text,
        }
        if i + 1 < cells.len() {
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(c.text.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
    }
    line.truncate(line.trim_end().len());
    line.push('\n');
    line
}

/// `pennant get` as text: one table when `summaries` are all of one kind (or `sections` is
/// false); else one table per kind in [`Kind::ALL`] order, names as `kind/name`, a blank line
/// after each, as `flux get all`. Kinds with no object print nothing.
pub fn render_get(
    summaries: &[Summary],
    all_namespaces: bool,
    sections: bool,
    colour: bool,
) -> String {
    let mut out = String::new();
    for kind in Kind::ALL {
        let rows: Vec<&Summary> = summaries.iter().filter(|s| s.kind == kind).collect();
        if rows.is_empty() {
            continue;
        }
        out += &Table::of(kind, &rows, all_namespaces, sections).render(colour);
        if sections {
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(text: &str, tone: Tone) -> Cell {
        Cell {
            text: text.into(),
            tone,
        }
    }

    #[test]
    fn rows_pad_outside_the_colour_codes_and_trim_the_end() {
        let row = [
            cell("web", Tone::Plain),
            cell("True", Tone::Good),
            cell("", Tone::Plain),
        ];
        assert_eq!(render_row(&row, &[5, 6, 3], false), "web     True\n");
        assert_eq!(
            render_row(&row, &[5, 6, 3], true),
            "web     \x1b[32mTrue\x1b[0m\n",
            "coloured: the same columns, codes around the text only"
        );
        let bad = [cell("False", Tone::Bad), cell("msg", Tone::Plain)];
        assert_eq!(
            render_row(&bad, &[5, 3], true),
            "\x1b[31mFalse\x1b[0m   msg\n"
        );
    }

    #[test]
    fn tones_follow_ready_and_phase() {
        assert_eq!(ready_tone("True"), Tone::Good);
        assert_eq!(ready_tone("False"), Tone::Bad);
        assert_eq!(ready_tone("Unknown"), Tone::Busy);
        assert_eq!(phase_tone("Succeeded"), Tone::Good);
        assert_eq!(phase_tone("Failed"), Tone::Bad);
        assert_eq!(phase_tone("Progressing"), Tone::Busy);
        assert_eq!(phase_tone(""), Tone::Plain);
    }
}

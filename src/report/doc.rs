//! A small document model that every report page is built in once and then
//! rendered twice, as Markdown and as static HTML, so the two versions can
//! never say different things.
//!
//! Links name *logical* paths relative to the root of a report tree: a page
//! is `SUMMARY` or `bets/14-royalty-math` (no extension), an asset keeps its
//! file name (`plots/14-royalty-math/RUN/x.svg`). Each renderer adds its own
//! extension and makes the link relative to the page it is writing.

/// A rendered page: where it lives (logical path) and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    /// Logical path of the page, e.g. `bets/14-royalty-math`.
    pub path: String,
    /// The page title (also its first heading).
    pub title: String,
    /// The blocks, top to bottom, after the title.
    pub blocks: Vec<Block>,
}

/// A block of a page.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A section heading, level 2 or deeper (the title is level 1).
    Heading(u8, String),
    /// A paragraph.
    Para(Vec<Inline>),
    /// A bulleted list, one item per entry.
    List(Vec<Vec<Inline>>),
    /// A table.
    Table(Table),
    /// An image (an SVG plot) by logical path, with its alt text.
    Image {
        /// Logical path of the image.
        src: String,
        /// Text for readers who cannot see it.
        alt: String,
    },
    /// Preformatted text (SQL, a hypothesis kept verbatim).
    Code(String),
}

/// A table; `id` lets tests and readers find it in the HTML (e.g.
/// `verdict-table`).
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// An HTML id for the table, e.g. `verdict-table`.
    pub id: Option<String>,
    /// Column headings.
    pub header: Vec<String>,
    /// Rows of cells; a cell is a run of inlines.
    pub rows: Vec<Vec<Vec<Inline>>>,
}

/// A run of text inside a block.
#[derive(Debug, Clone, PartialEq)]
pub enum Inline {
    /// Plain text (escaped by each renderer).
    Text(String),
    /// Emphasised text (verdicts).
    Strong(String),
    /// Code: SQL, run ids, hashes.
    Code(String),
    /// A link to a logical path (see the module docs).
    Link {
        /// The link text.
        text: String,
        /// The logical path linked to.
        to: String,
    },
}

/// Shorthand for a text inline.
pub fn text(s: impl Into<String>) -> Inline {
    Inline::Text(s.into())
}

/// Shorthand for a code inline.
pub fn code(s: impl Into<String>) -> Inline {
    Inline::Code(s.into())
}

/// Shorthand for a link inline.
pub fn link(text: impl Into<String>, to: impl Into<String>) -> Inline {
    Inline::Link { text: text.into(), to: to.into() }
}

/// Prose with `backticked` spans as code inlines, so a sentence can name a
/// command or a column without the renderers escaping its backticks.
pub fn rich(s: &str) -> Vec<Inline> {
    s.split('`')
        .enumerate()
        .filter(|(_, part)| !part.is_empty())
        .map(|(i, part)| if i % 2 == 1 { code(part) } else { text(part) })
        .collect()
}

/// Whether a logical path is an asset (kept as is) rather than a page.
pub fn is_asset(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.contains('.')
}

/// The link from page `from` to logical `to`, with `ext` added to pages:
/// `relative("bets/14-x", "SUMMARY", "md")` is `../SUMMARY.md`.
pub fn relative(from: &str, to: &str, ext: &str) -> String {
    let target = if is_asset(to) { to.to_string() } else { format!("{to}.{ext}") };
    let from_dirs: Vec<&str> = from.split('/').collect();
    let from_dirs = &from_dirs[..from_dirs.len() - 1];
    let to_parts: Vec<&str> = target.split('/').collect();
    let common = from_dirs.iter().zip(&to_parts).take_while(|(a, b)| a == b).count();
    let mut out: Vec<&str> = vec![".."; from_dirs.len() - common];
    out.extend(&to_parts[common..]);
    out.join("/")
}

/// Collapse runs of whitespace (newlines included) to one space: multi-line
/// SQL and hypotheses must fit one table cell.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

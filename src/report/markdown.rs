//! Markdown rendering of a [`Doc`] (GitHub-flavoured tables).

use super::doc::{Block, Doc, Inline, one_line, relative};

/// The page as Markdown, links relative to the page's own location.
pub fn render(doc: &Doc) -> String {
    let mut out = format!("# {}\n", escape(&doc.title));
    for block in &doc.blocks {
        out.push('\n');
        match block {
            Block::Heading(level, t) => {
                out.push_str(&format!("{} {}\n", "#".repeat(*level as usize), escape(t)));
            }
            Block::Para(inlines) => {
                out.push_str(&inline(doc, inlines, false));
                out.push('\n');
            }
            Block::List(items) => {
                for item in items {
                    out.push_str(&format!("- {}\n", inline(doc, item, false)));
                }
            }
            Block::Table(t) => {
                let header: Vec<String> = t.header.iter().map(|h| cell_escape(&escape(h))).collect();
                out.push_str(&format!("| {} |\n", header.join(" | ")));
                out.push_str(&format!("|{}\n", "---|".repeat(t.header.len())));
                for row in &t.rows {
                    let cells: Vec<String> = row.iter().map(|c| inline(doc, c, true)).collect();
                    out.push_str(&format!("| {} |\n", cells.join(" | ")));
                }
            }
            Block::Image { src, alt } => {
                out.push_str(&format!("![{}]({})\n", escape(alt), relative(&doc.path, src, "md")));
            }
            Block::Code(text) => {
                let fence = if text.contains("```") { "~~~~" } else { "```" };
                out.push_str(&format!("{fence}\n{}\n{fence}\n", text.trim_end()));
            }
        }
    }
    out
}

fn inline(doc: &Doc, inlines: &[Inline], in_table: bool) -> String {
    let mut s = String::new();
    for i in inlines {
        let piece = match i {
            Inline::Text(t) => escape(t),
            Inline::Strong(t) if t.is_empty() => String::new(),
            Inline::Strong(t) => format!("**{}**", escape(t)),
            Inline::Code(t) => code_span(&one_line(t)),
            Inline::Link { text, to } => format!("[{}]({})", escape(text), relative(&doc.path, to, "md")),
        };
        s.push_str(&piece);
    }
    if in_table { cell_escape(&one_line(&s)) } else { s }
}

/// A code span that survives backticks inside it.
fn code_span(t: &str) -> String {
    if t.is_empty() {
        return String::new();
    }
    if t.contains('`') { format!("`` {t} ``") } else { format!("`{t}`") }
}

/// Escape what Markdown would otherwise read as markup in plain text.
fn escape(t: &str) -> String {
    let mut s = String::with_capacity(t.len());
    for c in t.chars() {
        match c {
            '\\' | '*' | '`' => {
                s.push('\\');
                s.push(c);
            }
            '<' => s.push_str("&lt;"),
            _ => s.push(c),
        }
    }
    s
}

/// A `|` inside a table cell would end the cell.
fn cell_escape(t: &str) -> String {
    t.replace('|', "\\|")
}

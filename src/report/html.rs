//! Static HTML rendering of a [`Doc`]: one self-contained file per page
//! (inline CSS, no script), readable straight from disk.

use super::doc::{Block, Doc, Inline, relative};

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;\
line-height:1.45;color:#1b1b1b}table{border-collapse:collapse;margin:1rem 0;font-size:.92rem}\
th,td{border:1px solid #c8c8c8;padding:.3rem .5rem;text-align:left;vertical-align:top}\
th{background:#f0f0f0}code{font-size:.88em;background:#f5f5f5;padding:0 .2em}\
pre{background:#f5f5f5;padding:.6rem;overflow-x:auto;white-space:pre-wrap}\
img{max-width:100%;border:1px solid #ddd;margin:.5rem 0}.wide{overflow-x:auto}";

/// The page as a complete HTML document, links relative to the page.
pub fn render(doc: &Doc) -> String {
    let mut out = String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    out.push_str(&format!("<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n", esc(&doc.title)));
    out.push_str(&format!("<h1>{}</h1>\n", esc(&doc.title)));
    for block in &doc.blocks {
        match block {
            Block::Heading(level, t) => {
                let l = (*level).clamp(2, 6);
                out.push_str(&format!("<h{l} id=\"{}\">{}</h{l}>\n", anchor(t), esc(t)));
            }
            Block::Para(inlines) => out.push_str(&format!("<p>{}</p>\n", inline(doc, inlines))),
            Block::List(items) => {
                out.push_str("<ul>\n");
                for item in items {
                    out.push_str(&format!("<li>{}</li>\n", inline(doc, item)));
                }
                out.push_str("</ul>\n");
            }
            Block::Table(t) => {
                out.push_str("<div class=\"wide\">\n");
                match &t.id {
                    Some(id) => out.push_str(&format!("<table id=\"{}\">\n", esc(id))),
                    None => out.push_str("<table>\n"),
                }
                out.push_str("<thead><tr>");
                for h in &t.header {
                    out.push_str(&format!("<th>{}</th>", esc(h)));
                }
                out.push_str("</tr></thead>\n<tbody>\n");
                for row in &t.rows {
                    out.push_str("<tr>");
                    for c in row {
                        out.push_str(&format!("<td>{}</td>", inline(doc, c)));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</tbody>\n</table>\n</div>\n");
            }
            Block::Image { src, alt } => {
                out.push_str(&format!(
                    "<p><img src=\"{}\" alt=\"{}\"></p>\n",
                    esc(&relative(&doc.path, src, "html")),
                    esc(alt)
                ));
            }
            Block::Code(text) => out.push_str(&format!("<pre>{}</pre>\n", esc(text.trim_end()))),
        }
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn inline(doc: &Doc, inlines: &[Inline]) -> String {
    inlines
        .iter()
        .map(|i| match i {
            Inline::Text(t) => esc(t),
            Inline::Strong(t) => format!("<strong>{}</strong>", esc(t)),
            Inline::Code(t) => format!("<code>{}</code>", esc(t)),
            Inline::Link { text, to } => {
                format!("<a href=\"{}\">{}</a>", esc(&relative(&doc.path, to, "html")), esc(text))
            }
        })
        .collect()
}

/// Escape text for HTML content and attribute values.
pub fn esc(t: &str) -> String {
    let mut s = String::with_capacity(t.len());
    for c in t.chars() {
        match c {
            '&' => s.push_str("&amp;"),
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            '"' => s.push_str("&quot;"),
            _ => s.push(c),
        }
    }
    s
}

fn anchor(t: &str) -> String {
    let a: String = t.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    a.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-")
}

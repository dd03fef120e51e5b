//! Every file of a report tree, rendered from the catalogue in one pure
//! step, so `bets report` is "render, then write" and two runs over the same
//! bundles write the same bytes.

use std::collections::BTreeMap;

use super::analysis::holm_family;
use super::history::{Document, headline_document, rerun_documents};
use super::model::Catalogue;
use super::{html, markdown, pages, replication};

/// Folder of the HTML twin of the Markdown tree, inside reports/.
pub const HTML_DIR: &str = "html";

/// What `bets report` writes, by path relative to reports/.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// Text files: SUMMARY.md/.json, pages, documents (Markdown, JSON, HTML).
    pub files: BTreeMap<String, String>,
    /// Plot copies: destination under reports/ -> source, repo-relative.
    pub assets: BTreeMap<String, String>,
    /// The confirmations and retractions issued (their `.md` and `.json`
    /// are in `files`; the caller signs them).
    pub documents: Vec<Document>,
}

/// Render the whole report tree.
pub fn render(catalogue: &Catalogue) -> Rendered {
    let holm = holm_family(catalogue);
    let mut documents: Vec<Document> = Vec::new();
    for bet in &catalogue.bets {
        documents.extend(rerun_documents(bet).into_iter().map(|d| Document::Rerun(Box::new(d))));
        if let Some(h) = headline_document(bet, catalogue) {
            documents.push(Document::Headline(Box::new(h)));
        }
    }
    let mut docs = vec![pages::summary(catalogue, &holm, &documents)];
    if catalogue.published.is_some() {
        docs.push(replication::page(catalogue));
    }
    for bet in &catalogue.bets {
        docs.push(pages::bet_page(catalogue, bet, &documents));
    }
    for d in &documents {
        docs.push(pages::document_page(d, catalogue));
    }
    let mut files = BTreeMap::new();
    for doc in &docs {
        files.insert(format!("{}.md", doc.path), markdown::render(doc));
        files.insert(format!("{HTML_DIR}/{}.html", doc.path), html::render(doc));
    }
    for d in &documents {
        files.insert(format!("{}.json", d.path()), d.json(catalogue.ledger_head.as_ref()));
    }
    let mut summary_json =
        serde_json::to_string_pretty(&pages::summary_json(catalogue, &holm, &documents)).unwrap_or_default();
    summary_json.push('\n');
    files.insert("SUMMARY.json".into(), summary_json);
    let mut assets = BTreeMap::new();
    for bet in &catalogue.bets {
        if let (Some(run), Some(_)) = (bet.latest(), &bet.analysis) {
            for p in &run.plots {
                let dest = pages::plot_path(bet, run, p);
                let src = format!("{}/plots/{p}", run.dir);
                assets.insert(format!("{HTML_DIR}/{dest}"), src.clone());
                assets.insert(dest, src);
            }
        }
    }
    Rendered { files, assets, documents }
}

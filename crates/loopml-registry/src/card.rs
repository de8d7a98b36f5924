//! Model cards: a readable account of one model version (purpose and limitations, training
//! data, parameters, metrics, signature, lineage and history), rendered as Markdown or as a
//! self-contained HTML page, built from a [`Lineage`].
//!
//! Purpose and limitations come from the descriptions and from tags the user sets on the
//! registered model or the version (the version wins): `purpose`, `intended_use`,
//! `limitations`, `out_of_scope`, `ethical_considerations`, `caveats`, `owner`.

use std::collections::BTreeMap;

use crate::lineage::{Lineage, describe_event, format_number as num, format_time};

/// Tags that fill the card's narrative sections, with their headings.
pub const CARD_TAGS: &[(&str, &str)] = &[
    ("purpose", "Purpose"),
    ("intended_use", "Intended use"),
    ("limitations", "Limitations"),
    ("out_of_scope", "Out of scope"),
    ("ethical_considerations", "Ethical considerations"),
    ("caveats", "Caveats"),
    ("owner", "Owner"),
];

/// Output format of a card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardFormat {
    /// Markdown.
    Markdown,
    /// A self-contained HTML page.
    Html,
}

impl CardFormat {
    /// Parses `md`, `markdown` or `html`.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.to_ascii_lowercase().as_str() {
            "md" | "markdown" => Some(CardFormat::Markdown),
            "html" => Some(CardFormat::Html),
            _ => None,
        }
    }
}

/// The narrative fields: version tags override model tags.
fn narrative(l: &Lineage) -> Vec<(&'static str, String)> {
    CARD_TAGS
        .iter()
        .filter_map(|(key, title)| {
            l.model_version
                .tags
                .get(*key)
                .or_else(|| l.registered_model.tags.get(*key))
                .map(|v| (*title, v.clone()))
        })
        .collect()
}

/// Rows of a signature: (name, type, required).
fn signature_rows(schema: &serde_json::Value) -> Vec<(String, String, String)> {
    let Some(items) = schema.as_array() else {
        return vec![("(schema)".into(), schema.to_string(), String::new())];
    };
    items
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let name = c["name"]
                .as_str()
                .map_or_else(|| format!("#{i}"), str::to_string);
            let ty = match c["type"].as_str() {
                Some("tensor") => format!(
                    "tensor {} {}",
                    c["tensor-spec"]["dtype"].as_str().unwrap_or("?"),
                    c["tensor-spec"]["shape"]
                ),
                Some(t) => t.to_string(),
                None => c.to_string(),
            };
            let required = match c["required"].as_bool() {
                Some(true) => "yes",
                Some(false) => "no",
                None => "",
            };
            (name, ty, required.to_string())
        })
        .collect()
}

/// Metrics shown on the card: the run's latest values, then the logged model's.
fn metrics(l: &Lineage) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    if let Some(r) = &l.run {
        m.extend(r.metrics.iter().map(|(k, v)| (k.clone(), *v)));
    }
    if let Some(lm) = &l.logged_model {
        m.extend(lm.metrics.iter().map(|(k, v)| (k.clone(), *v)));
    }
    m
}

/// A Markdown table cell: pipes escaped, line breaks kept as `<br>` (a multi-line param such as
/// a pipeline step's command stays readable).
fn md_cell(s: &str) -> String {
    s.replace('|', "\\|")
        .replace("\r\n", "\n")
        .replace('\n', "<br>")
}

/// Renders the card as Markdown.
pub fn markdown(l: &Lineage) -> String {
    let mv = &l.model_version;
    let mut o = format!(
        "# Model card: {} version {}\n\n",
        l.registered_model.name, mv.version
    );
    o.push_str(&format!(
        "- **Stage:** {}\n- **Aliases:** {}\n- **Created:** {}\n- **Source:** `{}`\n- **Status:** {}\n\n",
        mv.stage,
        if mv.aliases.is_empty() {
            "none".to_string()
        } else {
            mv.aliases.iter().map(|a| format!("@{a}")).collect::<Vec<_>>().join(", ")
        },
        format_time(mv.creation_timestamp),
        mv.source,
        mv.status
    ));
    o.push_str("## Purpose and limitations\n\n");
    let mut any = false;
    if let Some(d) = &l.registered_model.description {
        o.push_str(&format!("{d}\n\n"));
        any = true;
    }
    if let Some(d) = &mv.description {
        o.push_str(&format!("**This version:** {d}\n\n"));
        any = true;
    }
    for (title, text) in narrative(l) {
        o.push_str(&format!("**{title}:** {text}\n\n"));
        any = true;
    }
    if !any {
        o.push_str(
            "_Not documented. Set a description, or tags such as `purpose` and `limitations`, \
             on the registered model or this version._\n\n",
        );
    }
    o.push_str("## Training data\n\n");
    if l.datasets.is_empty() {
        o.push_str("_No dataset inputs were logged by the training run._\n\n");
    } else {
        o.push_str(
            "| dataset | digest | context | source | rows | stored version |\n\
             |---|---|---|---|---|---|\n",
        );
        for d in &l.datasets {
            let rows = d
                .profile
                .as_ref()
                .and_then(|p| p["num_rows"].as_i64())
                .map(|n| n.to_string())
                .unwrap_or_default();
            o.push_str(&format!(
                "| {} | `{}` | {} | {} | {} | {} |\n",
                md_cell(&d.name),
                d.digest,
                md_cell(d.context.as_deref().unwrap_or("")),
                md_cell(&d.source),
                rows,
                d.stored
                    .as_ref()
                    .map(|s| format!("`{}`", s.reference))
                    .unwrap_or_default()
            ));
        }
        o.push('\n');
        for d in &l.datasets {
            if let Some(schema) = d.schema.as_ref().and_then(|s| s.get("mlflow_colspec")) {
                o.push_str(&format!(
                    "Schema of `{}`:\n\n| column | type |\n|---|---|\n",
                    d.name
                ));
                for (name, ty, _) in signature_rows(schema) {
                    o.push_str(&format!("| {} | {} |\n", md_cell(&name), md_cell(&ty)));
                }
                o.push('\n');
            }
        }
    }
    o.push_str("## Training\n\n");
    match &l.run {
        Some(r) => {
            o.push_str(&format!(
                "Run `{}` (\"{}\") in experiment {}{}, by {}, status {}, started {}{}.\n",
                r.run_id,
                r.run_name,
                r.experiment_id,
                r.experiment_name
                    .as_ref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default(),
                if r.user.is_empty() {
                    "an unknown user"
                } else {
                    &r.user
                },
                r.status,
                format_time(r.start_time),
                r.end_time
                    .map(|e| format!(", ended {}", format_time(e)))
                    .unwrap_or_default()
            ));
            if let Some(c) = &r.git_commit {
                o.push_str(&format!("Code: git commit `{c}`"));
                if let Some(s) = &r.source_name {
                    o.push_str(&format!(", entry point `{s}`"));
                }
                o.push_str(".\n");
            }
            o.push('\n');
            if !r.params.is_empty() {
                o.push_str("### Parameters\n\n| parameter | value |\n|---|---|\n");
                for (k, v) in &r.params {
                    o.push_str(&format!("| {} | {} |\n", md_cell(k), md_cell(v)));
                }
                o.push('\n');
            }
        }
        None => o.push_str("_The training run is not known._\n\n"),
    }
    o.push_str("## Evaluation metrics\n\n");
    let m = metrics(l);
    if m.is_empty() {
        o.push_str("_No metrics were logged._\n\n");
    } else {
        o.push_str("| metric | value |\n|---|---|\n");
        for (k, v) in &m {
            o.push_str(&format!("| {} | {} |\n", md_cell(k), num(*v)));
        }
        o.push('\n');
    }
    o.push_str("## Signature\n\n");
    match &l.model_file {
        Some(f) => {
            o.push_str(&format!("Flavors: {}.\n\n", f.flavors.join(", ")));
            for (title, schema) in [("Inputs", &f.inputs), ("Outputs", &f.outputs)] {
                match schema {
                    Some(s) => {
                        o.push_str(&format!(
                            "**{title}**\n\n| name | type | required |\n|---|---|---|\n"
                        ));
                        for (n, t, r) in signature_rows(s) {
                            o.push_str(&format!("| {} | {} | {} |\n", md_cell(&n), md_cell(&t), r));
                        }
                        o.push('\n');
                    }
                    None => o.push_str(&format!("**{title}:** not recorded.\n\n")),
                }
            }
        }
        None => o.push_str("_The MLmodel file could not be read._\n\n"),
    }
    o.push_str("## Lineage\n\n```\n");
    o.push_str(&l.to_text());
    o.push_str("```\n\n## Version history\n\n");
    if l.history.is_empty() {
        o.push_str("_No recorded changes._\n");
    }
    for h in &l.history {
        o.push_str(&format!(
            "- {}: {}\n",
            format_time(h.timestamp),
            describe_event(&h.event, &h.data)
        ));
    }
    if !l.warnings.is_empty() {
        o.push_str("\n## Gaps\n\n");
        for w in &l.warnings {
            o.push_str(&format!("- {w}\n"));
        }
    }
    o
}

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut o = String::from("<table><thead><tr>");
    for h in head {
        o.push_str(&format!("<th>{}</th>", esc(h)));
    }
    o.push_str("</tr></thead><tbody>");
    for r in rows {
        o.push_str("<tr>");
        for c in r {
            o.push_str(&format!("<td>{}</td>", esc(c)));
        }
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table>");
    o
}

const STYLE: &str = "body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;\
max-width:960px;margin:2rem auto;padding:0 1rem;color:#1d232a;background:#fff}\
h1{font-size:1.7rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;\
border-bottom:1px solid #d8dee4;padding-bottom:.3rem}h3{font-size:1rem}\
.meta{color:#57606a}.pill{display:inline-block;padding:.05rem .55rem;border-radius:1rem;\
background:#ddf4ff;color:#0969da;margin-right:.3rem;font-size:.85rem}\
.stage{background:#dafbe1;color:#1a7f37}table{border-collapse:collapse;width:100%;\
margin:.5rem 0 1rem}th,td{border:1px solid #d8dee4;padding:.3rem .6rem;text-align:left;\
vertical-align:top;white-space:pre-wrap}th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}\
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.85rem}\
pre{background:#f6f8fa;padding:.8rem;overflow:auto;border-radius:6px}\
.warn{background:#fff8c5;border:1px solid #d4a72c;padding:.5rem .8rem;border-radius:6px}\
.muted{color:#57606a;font-style:italic}dl{display:grid;grid-template-columns:max-content auto;\
gap:.2rem 1rem}dt{font-weight:600}dd{margin:0}";

/// Renders the card as a self-contained HTML page (inline CSS, no scripts, no external links).
pub fn html(l: &Lineage) -> String {
    let mv = &l.model_version;
    let name = &l.registered_model.name;
    let mut o = String::new();
    o.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    o.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    o.push_str(&format!(
        "<title>Model card: {} v{}</title><style>{STYLE}</style></head><body>",
        esc(name),
        mv.version
    ));
    o.push_str(&format!(
        "<h1>{} <span class=\"meta\">version {}</span></h1><p>",
        esc(name),
        mv.version
    ));
    o.push_str(&format!(
        "<span class=\"pill stage\">{}</span>",
        esc(&mv.stage)
    ));
    for a in &mv.aliases {
        o.push_str(&format!("<span class=\"pill\">@{}</span>", esc(a)));
    }
    o.push_str(&format!(
        "</p><p class=\"meta\">Registered {} · source <code>{}</code> · status {}</p>",
        esc(&format_time(mv.creation_timestamp)),
        esc(&mv.source),
        esc(&mv.status)
    ));

    o.push_str("<h2>Purpose and limitations</h2>");
    let mut any = false;
    if let Some(d) = &l.registered_model.description {
        o.push_str(&format!("<p>{}</p>", esc(d)));
        any = true;
    }
    if let Some(d) = &mv.description {
        o.push_str(&format!("<p><strong>This version:</strong> {}</p>", esc(d)));
        any = true;
    }
    let narrative = narrative(l);
    if !narrative.is_empty() {
        o.push_str("<dl>");
        for (title, text) in narrative {
            o.push_str(&format!("<dt>{}</dt><dd>{}</dd>", esc(title), esc(&text)));
        }
        o.push_str("</dl>");
        any = true;
    }
    if !any {
        o.push_str(
            "<p class=\"muted\">Not documented. Set a description, or tags such as \
             <code>purpose</code> and <code>limitations</code>, on the registered model or this \
             version.</p>",
        );
    }

    o.push_str("<h2>Training data</h2>");
    if l.datasets.is_empty() {
        o.push_str("<p class=\"muted\">No dataset inputs were logged by the training run.</p>");
    } else {
        let rows: Vec<Vec<String>> = l
            .datasets
            .iter()
            .map(|d| {
                vec![
                    d.name.clone(),
                    d.digest.clone(),
                    d.context.clone().unwrap_or_default(),
                    d.source.clone(),
                    d.profile
                        .as_ref()
                        .and_then(|p| p["num_rows"].as_i64())
                        .map(|n| n.to_string())
                        .unwrap_or_default(),
                    d.stored
                        .as_ref()
                        .map(|s| s.reference.clone())
                        .unwrap_or_default(),
                ]
            })
            .collect();
        o.push_str(&table(
            &[
                "dataset",
                "digest",
                "context",
                "source",
                "rows",
                "stored version",
            ],
            &rows,
        ));
        for d in &l.datasets {
            if let Some(schema) = d.schema.as_ref().and_then(|s| s.get("mlflow_colspec")) {
                o.push_str(&format!("<h3>Schema of {}</h3>", esc(&d.name)));
                let rows: Vec<Vec<String>> = signature_rows(schema)
                    .into_iter()
                    .map(|(n, t, _)| vec![n, t])
                    .collect();
                o.push_str(&table(&["column", "type"], &rows));
            }
        }
    }

    o.push_str("<h2>Training</h2>");
    match &l.run {
        Some(r) => {
            o.push_str("<dl>");
            let mut dl = |k: &str, v: String| {
                o.push_str(&format!("<dt>{}</dt><dd>{}</dd>", esc(k), esc(&v)));
            };
            dl("Run", format!("{} ({})", r.run_id, r.run_name));
            dl(
                "Experiment",
                match &r.experiment_name {
                    Some(n) => format!("{} ({n})", r.experiment_id),
                    None => r.experiment_id.clone(),
                },
            );
            dl("User", r.user.clone());
            dl("Status", r.status.clone());
            dl("Started", format_time(r.start_time));
            if let Some(e) = r.end_time {
                dl("Ended", format_time(e));
            }
            if let Some(c) = &r.git_commit {
                dl("Git commit", c.clone());
            }
            if let Some(s) = &r.source_name {
                dl("Entry point", s.clone());
            }
            o.push_str("</dl>");
            if !r.params.is_empty() {
                o.push_str("<h3>Parameters</h3>");
                let rows: Vec<Vec<String>> = r
                    .params
                    .iter()
                    .map(|(k, v)| vec![k.clone(), v.clone()])
                    .collect();
                o.push_str(&table(&["parameter", "value"], &rows));
            }
        }
        None => o.push_str("<p class=\"muted\">The training run is not known.</p>"),
    }

    o.push_str("<h2>Evaluation metrics</h2>");
    let m = metrics(l);
    if m.is_empty() {
        o.push_str("<p class=\"muted\">No metrics were logged.</p>");
    } else {
        o.push_str("<table><thead><tr><th>metric</th><th>value</th></tr></thead><tbody>");
        for (k, v) in &m {
            o.push_str(&format!(
                "<tr><td>{}</td><td class=\"num\">{}</td></tr>",
                esc(k),
                esc(&num(*v))
            ));
        }
        o.push_str("</tbody></table>");
    }

    o.push_str("<h2>Signature</h2>");
    match &l.model_file {
        Some(f) => {
            o.push_str(&format!("<p>Flavors: {}</p>", esc(&f.flavors.join(", "))));
            for (title, schema) in [("Inputs", &f.inputs), ("Outputs", &f.outputs)] {
                o.push_str(&format!("<h3>{title}</h3>"));
                match schema {
                    Some(s) => {
                        let rows: Vec<Vec<String>> = signature_rows(s)
                            .into_iter()
                            .map(|(n, t, r)| vec![n, t, r])
                            .collect();
                        o.push_str(&table(&["name", "type", "required"], &rows));
                    }
                    None => o.push_str("<p class=\"muted\">Not recorded.</p>"),
                }
            }
        }
        None => o.push_str("<p class=\"muted\">The MLmodel file could not be read.</p>"),
    }

    o.push_str("<h2>Lineage</h2><pre>");
    o.push_str(&esc(&l.to_text()));
    o.push_str("</pre><h2>Version history</h2>");
    if l.history.is_empty() {
        o.push_str("<p class=\"muted\">No recorded changes.</p>");
    } else {
        let rows: Vec<Vec<String>> = l
            .history
            .iter()
            .map(|h| vec![format_time(h.timestamp), describe_event(&h.event, &h.data)])
            .collect();
        o.push_str(&table(&["when", "what"], &rows));
    }
    if !l.warnings.is_empty() {
        o.push_str("<h2>Gaps</h2><div class=\"warn\"><ul>");
        for w in &l.warnings {
            o.push_str(&format!("<li>{}</li>", esc(w)));
        }
        o.push_str("</ul></div>");
    }
    o.push_str(&format!(
        "<p class=\"meta\">Generated by loopml from <code>{}</code>.</p></body></html>\n",
        esc(&l.model_uri)
    ));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_html() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn formats() {
        assert_eq!(CardFormat::parse("MD"), Some(CardFormat::Markdown));
        assert_eq!(CardFormat::parse("html"), Some(CardFormat::Html));
        assert_eq!(CardFormat::parse("pdf"), None);
        assert_eq!(num(0.5), "0.5");
        assert_eq!(num(3.0), "3");
        assert_eq!(num(1.0 / 3.0), "0.333333");
    }
}

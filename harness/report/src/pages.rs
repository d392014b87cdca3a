//! HTML pages for the JSON outputs of `faceval audit` and `faceval gate`, in the report's
//! style. They take `serde_json::Value` rather than the commands' structs, so the pages keep
//! working as those outputs gain fields: known parts (audits with `groupings`, gate checks,
//! pass/fail) get tables made for them, anything else is laid out generically.

use std::fmt::Write as _;

use faceval_eval::audit::AuditReport;
use faceval_eval::gate::GateReport;
use serde_json::Value;

use crate::html::{esc, CSS};

fn shell(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <link rel=\"icon\" href=\"data:,\"><title>{t}</title><style>{CSS}\
         .banner{{font-size:22px;font-weight:700;padding:10px 16px;border-radius:6px;margin:12px 0}}\
         .pass{{background:#e6f4ea;color:#1b7f3b;border:1px solid #a8d5b5}}\
         .fail{{background:#fdecea;color:#b3261e;border:1px solid #f1b0ab}}\
         .unknown{{background:#f5f7fa;color:#5b6675;border:1px solid #d9dee5}}\
         </style></head><body><main><h1>{t}</h1>\n{body}\
         <footer>Made by <code>faceval</code> from the command's JSON output.</footer></main></body></html>\n",
        t = esc(title)
    )
}

fn is_interval(v: &Value) -> bool {
    v.get("estimate").is_some() && v.get("low").is_some() && v.get("high").is_some()
}

fn num(x: f64) -> String {
    if x == x.trunc() && x.abs() < 1e15 {
        format!("{x:.0}")
    } else if x.abs() < 1e-3 && x != 0.0 {
        format!("{x:.2e}")
    } else {
        format!("{x:.4}")
    }
}

fn interval_text(v: &Value) -> String {
    let f = |k: &str| v.get(k).and_then(Value::as_f64);
    match (f("estimate"), f("low"), f("high")) {
        (Some(e), Some(l), Some(h)) => format!("{} [{}, {}]", num(e), num(l), num(h)),
        (Some(e), _, _) => match v.get("reason").and_then(Value::as_str) {
            Some(r) => format!("{} ({r})", num(e)),
            None => num(e),
        },
        _ => v
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("—")
            .to_string(),
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some("—".into()),
        Value::Bool(b) => Some(if *b { "yes" } else { "no" }.into()),
        Value::Number(n) => Some(n.as_f64().map(num).unwrap_or_else(|| n.to_string())),
        Value::String(s) => Some(s.clone()),
        _ if is_interval(v) => Some(interval_text(v)),
        Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => {
            Some(a.iter().filter_map(scalar).collect::<Vec<_>>().join(", "))
        }
        _ => None,
    }
}

/// Any JSON value as HTML: scalars as text, arrays of objects as tables, objects as key/value
/// tables, nesting as far as it goes.
fn generic(out: &mut String, v: &Value) {
    if let Some(s) = scalar(v) {
        out.push_str(&esc(&s));
        return;
    }
    match v {
        Value::Array(items) => {
            if items.iter().all(Value::is_object) {
                let mut keys: Vec<String> = Vec::new();
                for it in items {
                    for k in it.as_object().into_iter().flat_map(|o| o.keys()) {
                        if !keys.contains(k) {
                            keys.push(k.clone());
                        }
                    }
                }
                out.push_str("<div class=\"scroll\"><table><thead><tr>");
                for k in &keys {
                    let _ = write!(out, "<th>{}</th>", esc(k));
                }
                out.push_str("</tr></thead><tbody>");
                for it in items {
                    out.push_str("<tr>");
                    for k in &keys {
                        out.push_str("<td class=\"l\">");
                        match it.get(k) {
                            Some(x) => generic(out, x),
                            None => out.push('—'),
                        }
                        out.push_str("</td>");
                    }
                    out.push_str("</tr>");
                }
                out.push_str("</tbody></table></div>");
            } else {
                out.push_str("<ul>");
                for it in items {
                    out.push_str("<li>");
                    generic(out, it);
                    out.push_str("</li>");
                }
                out.push_str("</ul>");
            }
        }
        Value::Object(map) => {
            out.push_str("<div class=\"scroll\"><table><tbody>");
            for (k, x) in map {
                let _ = write!(out, "<tr><th class=\"l\">{}</th><td class=\"l\">", esc(k));
                generic(out, x);
                out.push_str("</td></tr>");
            }
            out.push_str("</tbody></table></div>");
        }
        _ => {}
    }
}

/// The fairness module's `Audit` (`n`, `overall`, `groupings[]`), laid out for reading.
fn audit_block(out: &mut String, a: &Value) {
    if let Some(o) = a.get("overall") {
        let _ = write!(
            out,
            "<p>Overall accuracy {} on n = {}</p>",
            esc(&interval_text(o)),
            esc(&a.get("n").and_then(scalar).unwrap_or_default())
        );
    }
    let Some(groupings) = a.get("groupings").and_then(Value::as_array) else {
        return;
    };
    for g in groupings {
        let name = g.get("name").and_then(Value::as_str).unwrap_or("grouping");
        let _ = write!(out, "<h3>{}</h3>", esc(name));
        let chi = g.get("chi_square");
        let p = chi.and_then(|c| c.get("p_value")).and_then(Value::as_f64);
        let p_holm = g
            .get("chi_square_p_holm")
            .or_else(|| g.get("p_holm"))
            .and_then(Value::as_f64);
        let _ = write!(
            out,
            "<p class=\"note\">chi-square p = {}, Holm-adjusted p = {}{}</p>",
            p.map(num).unwrap_or("—".into()),
            p_holm.map(num).unwrap_or("—".into()),
            chi.and_then(|c| c.get("reason"))
                .and_then(Value::as_str)
                .map(|r| format!(" ({})", esc(r)))
                .unwrap_or_default()
        );
        if let Some(groups) = g.get("groups").and_then(Value::as_array) {
            out.push_str("<div class=\"scroll\"><table><thead><tr><th class=\"l\">group</th><th>n</th><th>accuracy [95% CI]</th><th>small</th></tr></thead><tbody>");
            for gr in groups {
                let _ = write!(
                    out,
                    "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(gr.get("key").and_then(Value::as_str).unwrap_or("")),
                    esc(&gr.get("n").and_then(scalar).unwrap_or_default()),
                    esc(&gr.get("accuracy").map(interval_text).unwrap_or_default()),
                    if gr.get("small").and_then(Value::as_bool) == Some(true) {
                        "yes"
                    } else {
                        ""
                    }
                );
            }
            out.push_str("</tbody></table></div>");
        }
        if let Some(ms) = g.get("measures").and_then(Value::as_array) {
            out.push_str("<div class=\"scroll\"><table><thead><tr><th class=\"l\">measure</th><th>value [95% CI]</th><th>groups</th></tr></thead><tbody>");
            for m in ms {
                let _ = write!(
                    out,
                    "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td></tr>",
                    esc(m.get("name").and_then(Value::as_str).unwrap_or("")),
                    esc(&interval_text(m)),
                    esc(&m.get("groups").and_then(scalar).unwrap_or_default())
                );
            }
            out.push_str("</tbody></table></div>");
        }
        let empty: Vec<&str> = g
            .get("empty_intersections")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !empty.is_empty() {
            let _ = write!(
                out,
                "<p class=\"note\">Empty intersections (no items): {}</p>",
                esc(&empty.join(", "))
            );
        }
    }
}

/// Every object in `v` that looks like an audit (has a `groupings` array), with its path.
fn find_audits<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(map) => {
            if map.get("groupings").is_some_and(Value::is_array) {
                out.push((path, v));
                return;
            }
            for (k, x) in map {
                // Containers (`runs`, `tasks`) name nothing; their items do.
                let p = if x.is_array() || path.is_empty() && !x.is_object() {
                    path.clone()
                } else if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                find_audits(x, p, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let name = ["task", "model", "name", "run"]
                    .iter()
                    .find_map(|k| x.get(*k).and_then(Value::as_str));
                let label = match (name, path.is_empty()) {
                    (Some(n), true) => n.to_string(),
                    (Some(n), false) => format!("{path} · {n}"),
                    (None, _) => format!("{path}[{i}]"),
                };
                find_audits(x, label, out);
            }
        }
        _ => {}
    }
}

/// Scalar top-level fields (model, task, run, ...) as a heading line.
fn header_facts(v: &Value) -> String {
    let Some(map) = v.as_object() else {
        return String::new();
    };
    let facts: Vec<String> = map
        .iter()
        .filter_map(|(k, x)| {
            let s = match x {
                Value::String(_) | Value::Number(_) | Value::Bool(_) => scalar(x)?,
                _ => return None,
            };
            Some(format!("{}: <b>{}</b>", esc(k), esc(&s)))
        })
        .collect();
    if facts.is_empty() {
        String::new()
    } else {
        format!("<p class=\"meta\">{}</p>", facts.join(" · "))
    }
}

/// The page for `faceval audit`'s JSON output.
pub fn audit_html(audit: &Value) -> String {
    let mut body = header_facts(audit);
    let mut audits = Vec::new();
    find_audits(audit, String::new(), &mut audits);
    for (path, a) in &audits {
        if !path.is_empty() {
            let _ = write!(body, "<h2>{}</h2>", esc(path));
        }
        audit_block(&mut body, a);
    }
    body.push_str("<details><summary>All fields</summary>");
    generic(&mut body, audit);
    body.push_str("</details>");
    shell("Fairness audit", &body)
}

/// Pass, fail, or unknown from the usual field names of a gate result.
fn verdict(v: &Value) -> Option<bool> {
    for k in ["passed", "pass", "ok", "success"] {
        if let Some(b) = v.get(k).and_then(Value::as_bool) {
            return Some(b);
        }
    }
    if let Some(b) = v.get("regression").and_then(Value::as_bool) {
        return Some(!b);
    }
    for k in ["decision", "status", "result", "verdict", "outcome"] {
        if let Some(s) = v.get(k).and_then(Value::as_str) {
            let s = s.to_ascii_lowercase();
            if ["pass", "passed", "ok", "success", "accept", "accepted"].contains(&s.as_str()) {
                return Some(true);
            }
            if ["fail", "failed", "regression", "reject", "rejected"].contains(&s.as_str()) {
                return Some(false);
            }
        }
    }
    None
}

/// The page for `faceval gate`'s JSON output.
pub fn gate_html(gate: &Value) -> String {
    let mut body = String::new();
    match verdict(gate) {
        Some(true) => body.push_str("<div class=\"banner pass\">PASS — no regression</div>"),
        Some(false) => body.push_str("<div class=\"banner fail\">FAIL — regression</div>"),
        None => body
            .push_str("<div class=\"banner unknown\">No pass/fail field in the gate output</div>"),
    }
    body.push_str(&header_facts(gate));
    for notice in gate
        .get("notices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let _ = write!(
            body,
            "<div class=\"banner unknown\">Warning: {}</div>",
            esc(notice)
        );
    }
    if let Some(power) = gate.get("power").and_then(Value::as_str) {
        let _ = write!(body, "<p>{}</p>", esc(power));
    }
    // Checks per task: name, status, message; every field follows in "All fields".
    let mut check_lists: Vec<(String, &Vec<Value>)> = Vec::new();
    if let Some(tasks) = gate.get("tasks").and_then(Value::as_array) {
        for t in tasks {
            if let Some(checks) = t.get("checks").and_then(Value::as_array) {
                let name = t.get("task").and_then(Value::as_str).unwrap_or("task");
                let n = t.get("n").and_then(scalar).unwrap_or_default();
                check_lists.push((format!("{name} (n = {n} paired)"), checks));
            }
        }
    }
    if let Some(checks) = gate.get("run_checks").and_then(Value::as_array) {
        if !checks.is_empty() {
            check_lists.push(("Run-level checks".into(), checks));
        }
    }
    for (title, checks) in &check_lists {
        let _ = write!(
            body,
            "<h2>{}</h2><div class=\"scroll\"><table><thead><tr><th class=\"l\">check</th><th>status</th><th class=\"l\">message</th></tr></thead><tbody>",
            esc(title)
        );
        for c in *checks {
            let status = c.get("status").and_then(scalar).unwrap_or_default();
            let class = match status.to_ascii_lowercase().as_str() {
                "pass" | "passed" | "ok" => "up",
                "fail" | "failed" | "regression" | "incomplete" => "down",
                _ => "note",
            };
            let _ = write!(
                body,
                "<tr><td class=\"l\">{}</td><td class=\"{class}\">{}</td><td class=\"l\">{}</td></tr>",
                esc(&c.get("name").and_then(scalar).unwrap_or_default()),
                esc(&status),
                esc(&c.get("message").and_then(scalar).unwrap_or_default())
            );
        }
        body.push_str("</tbody></table></div>");
    }
    body.push_str("<details><summary>All fields</summary>");
    generic(&mut body, gate);
    body.push_str("</details>");
    shell("Regression gate", &body)
}

/// The HTML page of an audit. The page lays out the audit's JSON form ([`audit_html`]), so it
/// shows every field the audit has, known ones in tables made for them.
pub fn render_audit_html(audit: &AuditReport) -> String {
    audit_html(&serde_json::to_value(audit).unwrap_or_default())
}

/// The HTML page of a gate decision, laid out from its JSON form ([`gate_html`]).
pub fn render_gate_html(gate: &GateReport) -> String {
    gate_html(&serde_json::to_value(gate).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use faceval_eval::fairness::{audit_accuracy, FairnessOptions};

    #[test]
    fn audit_page_shows_groups_and_measures_of_a_real_audit() {
        let correct: Vec<bool> = (0..200).map(|i| i % 3 != 0).collect();
        let race: Vec<&str> = (0..200)
            .map(|i| if i % 2 == 0 { "A" } else { "B" })
            .collect();
        let audit =
            audit_accuracy(&correct, &[("race", &race)], &FairnessOptions::default()).unwrap();
        let v = serde_json::json!({"model": "m<1>", "task": "t", "audit": audit});
        let html = audit_html(&v);
        assert!(html.contains("<h3>race</h3>"));
        assert!(html.contains("difference_between_groups"));
        assert!(html.contains("m&lt;1&gt;"), "model name must be escaped");
        assert!(!html.contains("<script"));
    }

    #[test]
    fn gate_page_reads_the_verdict_and_tabulates_checks() {
        let v = serde_json::json!({"passed": false, "power": "smallest <drop>", "notices": ["same & stale"], "tasks": [{"task": "a", "n": 10, "checks": [
            {"name": "accuracy", "status": "fail", "message": "dropped 5 points", "accuracy": {"p_value": 0.001}}]}]});
        let html = gate_html(&v);
        assert!(html.contains("FAIL"));
        assert!(html.contains("a (n = 10 paired)"));
        assert!(html.contains("dropped 5 points"));
        assert!(html.contains("<p>smallest &lt;drop&gt;</p>"));
        assert!(html.contains("Warning: same &amp; stale"));
        assert!(html.contains("<th>p_value</th>") || html.contains(">p_value</th>"));
        let ok = gate_html(&serde_json::json!({"decision": "pass"}));
        assert!(ok.contains("PASS"));
    }
}

//! Renders faceval results — leaderboards, fairness audits, gate decisions — as Markdown,
//! JSON and self-contained HTML.

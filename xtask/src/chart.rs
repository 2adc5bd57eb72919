//! The bench's chart: one group of bars per workload (ours, the anchor, the raw limit),
//! each bar's length its rate over the group's largest, so a reader sees the ratios at a
//! glance whatever the absolute rates. Written by hand as SVG: no dependency to build.

use std::fmt::Write as _;

/// The chart's title.
pub(crate) const TITLE: &str =
    "Ours, the anchor and the raw limit: each bar's share of its group's fastest";

/// `cargo xtask chart [report.md] [out.svg]`: draws the chart of a saved bench report
/// (default `target/bench-results.md` into `target/bench-chart.svg`).
pub(crate) fn chart(args: &[String]) -> anyhow::Result<()> {
    let root = crate::util::root();
    let report = args
        .first()
        .map_or_else(|| root.join("target/bench-results.md"), Into::into);
    let out = args
        .get(1)
        .map_or_else(|| root.join("target/bench-chart.svg"), Into::into);
    let text = std::fs::read_to_string(&report)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", report.display()))?;
    let groups = from_report(&text);
    if groups.is_empty() {
        anyhow::bail!("{} holds no cycle or HTTP table", report.display());
    }
    std::fs::write(&out, svg(TITLE, &groups))?;
    eprintln!("{} groups drawn into {}", groups.len(), out.display());
    Ok(())
}

/// One workload of the chart: a label and the rates of its contenders, in the order drawn.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Group {
    pub(crate) label: String,
    /// (contender, rate); rates in one group share a unit (cycles/s, requests/s).
    pub(crate) bars: Vec<(String, f64)>,
}

const WIDTH: f64 = 900.0;
/// Where bars start; each group's label is a line above its bars.
const BAR_X: f64 = 20.0;
/// The height of a group's label line.
const LABEL_H: f64 = 18.0;
const BAR_H: f64 = 16.0;
const GAP: f64 = 14.0;
const TOP: f64 = 40.0;
/// The colour of a contender: blue for ours, grey for a raw limit or a bare app, orange for
/// an anchor.
fn colour(name: &str) -> &'static str {
    if name.starts_with("ours") || name.starts_with("session-") {
        "#1f77b4"
    } else if name.starts_with("raw") || name.starts_with("bare") {
        "#7f7f7f"
    } else {
        "#ff7f0e"
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The chart of `groups` under `title`: each bar labelled with its contender and its share
/// of the group's largest rate.
pub(crate) fn svg(title: &str, groups: &[Group]) -> String {
    let bars: usize = groups.iter().map(|g| g.bars.len()).sum();
    let height = TOP + bars as f64 * BAR_H + groups.len() as f64 * (GAP + LABEL_H) + 20.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<text x="10" y="22" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let span = WIDTH - BAR_X - 320.0;
    let mut y = TOP;
    for group in groups {
        let most = group.bars.iter().map(|(_, r)| *r).fold(0.0, f64::max);
        let _ = writeln!(
            out,
            r#"<text x="10" y="{:.1}" font-weight="bold">{}</text>"#,
            y + LABEL_H * 0.7,
            escape(&group.label)
        );
        y += LABEL_H;
        for (name, rate) in &group.bars {
            let share = if most > 0.0 { rate / most } else { 0.0 };
            let colour = colour(name);
            let _ = writeln!(
                out,
                r#"<rect class="bar" x="{BAR_X}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{}: {rate:.0}</title></rect>"#,
                span * share,
                BAR_H - 3.0,
                escape(name)
            );
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}">{} {:.0} %</text>"#,
                BAR_X + span * share + 6.0,
                y + BAR_H * 0.7,
                escape(name),
                share * 100.0
            );
            y += BAR_H;
        }
        y += GAP;
    }
    out.push_str("</svg>\n");
    out
}

/// The chart's groups from a bench report (`target/bench-results.md`): each row of a cycle
/// table (ours, its anchor and its raw limit, cycles/s) and each HTTP table (its apps,
/// requests/s). A `—` cell is a contender the row does not have.
pub(crate) fn from_report(report: &str) -> Vec<Group> {
    let mut groups = Vec::new();
    let mut http: Option<Group> = None;
    let mut section = "";
    for line in report.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            groups.extend(http.take());
            section = title;
            if title.starts_with("HTTP") {
                http = Some(Group {
                    label: format!("{title} (requests/s)"),
                    bars: Vec::new(),
                });
            }
            continue;
        }
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        let rate = |i: usize| cells.get(i).and_then(|c| c.parse::<f64>().ok());
        if section.starts_with("Session cycle") && cells.len() >= 8 {
            let Some(ours) = rate(2) else { continue };
            let mut bars = vec![("ours".to_owned(), ours)];
            if let Some(anchor) = rate(4) {
                bars.push((cells[3].to_owned(), anchor));
            }
            if let Some(raw) = rate(6) {
                bars.push(("raw limit".to_owned(), raw));
            }
            groups.push(Group {
                label: format!("{} · N={} (cycles/s)", cells[0], cells[1]),
                bars,
            });
        } else if let Some(group) = http.as_mut()
            && let Some(rps) = rate(1)
        {
            group.bars.push((cells[0].to_owned(), rps));
        }
    }
    groups.extend(http);
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widths(svg: &str) -> Vec<f64> {
        svg.lines()
            .filter(|l| l.contains(r#"class="bar""#))
            .map(|l| {
                let w = &l[l.find("width=\"").unwrap() + 7..];
                w[..w.find('"').unwrap()].parse().unwrap()
            })
            .collect()
    }

    #[test]
    fn bars_are_proportional_to_the_largest_rate_of_their_group() {
        let groups = [
            Group {
                label: "redis N=64".into(),
                bars: vec![
                    ("ours".into(), 50.0),
                    ("tower-sessions-redis-store".into(), 100.0),
                    ("raw limit".into(), 200.0),
                ],
            },
            Group {
                label: "memory N=64".into(),
                bars: vec![("ours".into(), 3000.0), ("tower-sessions".into(), 1000.0)],
            },
        ];
        let chart = svg("Session cycle", &groups);
        let w = widths(&chart);
        assert_eq!(w.len(), 5);
        assert!((w[0] / w[2] - 0.25).abs() < 1e-3, "{w:?}");
        assert!((w[1] / w[2] - 0.5).abs() < 1e-3, "{w:?}");
        assert!((w[4] / w[3] - 1.0 / 3.0).abs() < 1e-3, "{w:?}");
        assert_eq!(w[2], w[3], "each group's largest spans the same width");
        assert!(chart.contains("ours 25 %"));
        assert!(chart.starts_with("<svg") && chart.trim_end().ends_with("</svg>"));
        assert_eq!(colour("ours"), colour("session-tower + memory store"));
        assert_eq!(colour("raw limit"), colour("bare axum (no sessions)"));
        assert_ne!(colour("ours"), colour("tower-sessions-redis-store"));
    }

    #[test]
    fn labels_are_escaped_and_an_empty_group_draws_nothing() {
        let groups = [
            Group {
                label: "a <b> & \"c\"".into(),
                bars: vec![("x<y".into(), 0.0)],
            },
            Group {
                label: "none".into(),
                bars: Vec::new(),
            },
        ];
        let chart = svg("t & t", &groups);
        assert!(chart.contains("a &lt;b&gt; &amp; &quot;c&quot;"));
        assert!(chart.contains("t &amp; t"));
        assert!(!chart.contains("x<y"));
        assert_eq!(widths(&chart), [0.0]);
    }

    #[test]
    fn a_report_gives_a_group_per_cycle_row_and_per_http_table() {
        let report = "## Session cycle on the store API\n\n\
| backend | N | ours cycles/s | anchor | anchor cycles/s | ours ÷ anchor | raw limit cycles/s | ours ÷ raw | ours min–max |\n\
|---|---:|---:|---|---:|---:|---:|---:|---|\n\
| redis | 64 | 24912 | tower-sessions-redis-store | 22617 | 1.10× | 30174 | 83 % | 1–2 |\n\
| memcached | 64 | 13864 | — | — | — | 18715 | 74 % | 1–2 |\n\
\n## HTTP: the counter route\n\n\
| app | requests/s (median) | rounds min–max | ratio to bare axum | server CPU µs/request (median) | bare's CPU ÷ this |\n\
|---|---:|---|---:|---:|---:|\n\
| bare axum (no sessions) | 110339 | 1–2 | 1.00 | 7.86 | 1.00 |\n\
| session-tower + memory store | 93107 | 1–2 | 0.84 | 9.48 | 0.83 |\n\
\n## Memory per session\n\n| store | sessions | payload B | bytes/session | ratio to payload |\n\
| session-memory | 100000 | 200 | 301.1 | 1.51 |\n";
        let groups = from_report(report);
        assert_eq!(groups.len(), 3, "{groups:?}");
        assert_eq!(groups[0].label, "redis · N=64 (cycles/s)");
        assert_eq!(
            groups[0].bars,
            [
                ("ours".to_owned(), 24912.0),
                ("tower-sessions-redis-store".to_owned(), 22617.0),
                ("raw limit".to_owned(), 30174.0)
            ]
        );
        assert_eq!(
            groups[1].bars,
            [
                ("ours".to_owned(), 13864.0),
                ("raw limit".to_owned(), 18715.0)
            ]
        );
        assert_eq!(groups[2].label, "HTTP: the counter route (requests/s)");
        assert_eq!(groups[2].bars.len(), 2);
        assert_eq!(
            groups[2].bars[1],
            ("session-tower + memory store".to_owned(), 93107.0)
        );
    }
}

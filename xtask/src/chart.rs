//! The bench's chart: one group of bars per workload (ours, the anchor, the raw limit),
//! each bar's length its rate over the group's largest, so a reader sees the ratios at a
//! glance whatever the absolute rates. Written by hand as SVG: no dependency to build.

use std::fmt::Write as _;

/// One workload of the chart: a label and the rates of its contenders, in the order drawn.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Group {
    pub(crate) label: String,
    /// (contender, rate); rates in one group share a unit (cycles/s, requests/s).
    pub(crate) bars: Vec<(String, f64)>,
}

const WIDTH: f64 = 900.0;
const LABEL_W: f64 = 330.0;
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
    let height = TOP + bars as f64 * BAR_H + groups.len() as f64 * GAP + 20.0;
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
    let span = WIDTH - LABEL_W - 170.0;
    let mut y = TOP;
    for group in groups {
        let most = group.bars.iter().map(|(_, r)| *r).fold(0.0, f64::max);
        let _ = writeln!(
            out,
            r#"<text x="10" y="{:.1}" font-weight="bold">{}</text>"#,
            y + BAR_H * 0.75,
            escape(&group.label)
        );
        for (name, rate) in &group.bars {
            let share = if most > 0.0 { rate / most } else { 0.0 };
            let colour = colour(name);
            let _ = writeln!(
                out,
                r#"<rect class="bar" x="{LABEL_W}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{}: {rate:.0}</title></rect>"#,
                span * share,
                BAR_H - 3.0,
                escape(name)
            );
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}">{} {:.0} %</text>"#,
                LABEL_W + span * share + 6.0,
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
}

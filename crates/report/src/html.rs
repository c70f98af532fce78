//! The self-contained HTML report: inline CSS, inline SVG charts, a few lines of inline JS to
//! sort tables. Nothing is fetched: no web fonts, no scripts or images from elsewhere.

use std::fmt::Write as _;

use serde_json::Value;

use crate::group::{param_display, short_value, Analysis, GapClosed, Group, IDEAL};

/// A drawn chart of a group.
pub(crate) struct Figure {
    pub title: String,
    /// The SVG document, inlined as is (minus its XML namespace).
    pub svg: String,
    /// The chart files, relative to the report.
    pub png: String,
    pub svg_file: String,
}

pub(crate) struct Section<'a> {
    pub group: &'a Group,
    pub label: String,
    pub figures: Vec<Figure>,
}

const CSS: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
main{max-width:1480px;margin:0 auto;padding:24px 32px 64px}
h1{font-size:28px;margin:8px 0 4px}h2{font-size:22px;margin:40px 0 8px;padding-top:12px;border-top:2px solid #ddd}
h3{font-size:17px;margin:24px 0 8px}
.meta{color:#555;margin:4px 0 16px}
dl.params{display:grid;grid-template-columns:max-content auto;gap:2px 16px;margin:8px 0 16px;font-size:14px}
dl.params dt{color:#555}dl.params dd{margin:0;font-family:ui-monospace,"DejaVu Sans Mono",monospace}
figure{margin:16px 0;background:#fff;border:1px solid #e2e2e2;border-radius:6px;padding:8px}
figure svg{display:block;max-width:100%;height:auto}
figcaption{font-size:13px;color:#555;padding:4px 8px}
table{border-collapse:collapse;font-size:13px;background:#fff;margin:8px 0 16px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#f0f0f0;position:sticky;top:0}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th:after{content:" \2195";color:#aaa}
table.sortable th[data-dir=asc]:after{content:" \25B2";color:#333}
table.sortable th[data-dir=desc]:after{content:" \25BC";color:#333}
td.t,th.t{text-align:left}
tbody tr:nth-child(even){background:#f8f8f8}
.scroll{overflow-x:auto;max-height:720px;overflow-y:auto}
.failed td.err{color:#b00020;text-align:left;white-space:normal;max-width:640px}
.note{background:#fff8e1;border:1px solid #f0d98c;padding:8px 12px;border-radius:4px}
nav ul{columns:2;font-size:14px}
"#;

const JS: &str = r#"
document.querySelectorAll('table.sortable th').forEach(function(th){
  th.addEventListener('click',function(){
    var table=th.closest('table'),body=table.tBodies[0];
    var col=Array.prototype.indexOf.call(th.parentNode.children,th);
    var asc=th.getAttribute('data-dir')!=='asc';
    table.querySelectorAll('th').forEach(function(h){h.removeAttribute('data-dir');});
    th.setAttribute('data-dir',asc?'asc':'desc');
    var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){
      var x=a.cells[col].getAttribute('data-v'),y=b.cells[col].getAttribute('data-v');
      var nx=parseFloat(x),ny=parseFloat(y),c;
      if(!isNaN(nx)&&!isNaN(ny)){c=nx-ny;}else if(!isNaN(nx)){c=-1;}else if(!isNaN(ny)){c=1;}
      else{c=String(x).localeCompare(String(y));}
      return asc?c:-c;
    });
    rows.forEach(function(r){body.appendChild(r);});
  });
});
"#;

pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A figure column of the tables: header, how to read it from a row.
struct Col {
    head: &'static str,
    key: &'static str,
    percent: bool,
}

const FIGURES: &[Col] = &[
    Col {
        head: "GPU hit %",
        key: "token_hit_ratio",
        percent: true,
    },
    Col {
        head: "CPU hit %",
        key: "cpu_token_hit_ratio",
        percent: true,
    },
    Col {
        head: "Disk hit %",
        key: "disk_token_hit_ratio",
        percent: true,
    },
    Col {
        head: "All tiers hit %",
        key: "total_token_hit_ratio",
        percent: true,
    },
    Col {
        head: "Request hit %",
        key: "request_hit_rate",
        percent: true,
    },
    Col {
        head: "Compute saved %",
        key: "compute_saved_ratio",
        percent: true,
    },
    Col {
        head: "Queue p50 s",
        key: "queue_delay_p50_s",
        percent: false,
    },
    Col {
        head: "Queue p90 s",
        key: "queue_delay_p90_s",
        percent: false,
    },
    Col {
        head: "GPU evictions",
        key: "gpu_evictions",
        percent: false,
    },
    Col {
        head: "CPU evictions",
        key: "cpu_evictions",
        percent: false,
    },
];

/// Figure columns that say something for these rows (CPU/disk columns only with that tier).
fn figure_cols(rows: &[Value], groups: &[&Group]) -> Vec<&'static Col> {
    let any_cpu = groups.iter().any(|g| g.has_lmcache());
    let any_disk = groups
        .iter()
        .any(|g| g.points.iter().any(|p| p.disk_hit > 0.0) || g.params.contains_key("disk_chunks"));
    FIGURES
        .iter()
        .filter(|c| match c.key {
            "cpu_token_hit_ratio" | "cpu_evictions" => any_cpu,
            "disk_token_hit_ratio" => any_disk,
            _ => true,
        })
        .filter(|c| {
            groups
                .iter()
                .flat_map(|g| &g.points)
                .any(|p| rows[p.row].get(c.key).is_some_and(|v| !v.is_null()))
        })
        .collect()
}

fn num_cell(out: &mut String, v: Option<f64>, percent: bool) {
    match v {
        Some(x) if percent => {
            let _ = write!(out, "<td data-v=\"{x}\">{:.2}</td>", x * 100.0);
        }
        Some(x) => {
            let _ = write!(out, "<td data-v=\"{x}\">{}</td>", thousands(x));
        }
        None => out.push_str("<td data-v=\"\"></td>"),
    }
}

fn text_cell(out: &mut String, s: &str) {
    let _ = write!(out, "<td class=\"t\" data-v=\"{0}\">{0}</td>", esc(s));
}

/// 1234567 -> 1,234,567 (integers); other numbers with up to 3 decimals.
fn thousands(x: f64) -> String {
    if x != x.trunc() || x.abs() >= 1e15 {
        return format!("{x:.3}");
    }
    let digits = format!("{}", x.abs() as u64);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

/// The points table of some groups: parameter columns `param_keys`, then policy, capacity
/// and the figures; gap closed vs Belady where it is defined.
fn points_table(out: &mut String, rows: &[Value], groups: &[&Group], param_keys: &[String]) {
    let cols = figure_cols(rows, groups);
    let gaps: Vec<Option<GapClosed>> = groups.iter().map(|g| g.gap_closed_with_bounds()).collect();
    let with_gap = gaps.iter().any(Option::is_some);
    out.push_str("<div class=\"scroll\"><table class=\"sortable\"><thead><tr>");
    for k in param_keys {
        let _ = write!(out, "<th class=\"t\">{}</th>", esc(k));
    }
    out.push_str("<th class=\"t\">policy</th><th>GPU blocks</th><th>GPU GiB</th>");
    for c in &cols {
        let _ = write!(out, "<th>{}</th>", c.head);
    }
    if with_gap {
        out.push_str("<th>Gap closed vs Belady %</th>");
    }
    out.push_str("</tr></thead><tbody>");
    for (g, gap) in groups.iter().zip(&gaps) {
        for name in g.series_names() {
            for p in g.series(&name) {
                let row = &rows[p.row];
                out.push_str("<tr>");
                for k in param_keys {
                    text_cell(out, &param_display(g.params.get(k), k));
                }
                let policy = if p.is_ideal() {
                    format!("{IDEAL} (infinite)")
                } else {
                    p.series.clone()
                };
                text_cell(out, &policy);
                num_cell(out, Some(p.gpu_blocks), false);
                match p.gpu_cache_gb {
                    Some(gb) => {
                        let _ = write!(out, "<td data-v=\"{gb}\">{gb:.2}</td>");
                    }
                    None => out.push_str("<td data-v=\"\"></td>"),
                }
                for c in &cols {
                    num_cell(out, row.get(c.key).and_then(Value::as_f64), c.percent);
                }
                if with_gap {
                    let v = gap.as_ref().and_then(|gs| {
                        gs.iter()
                            .find(|(n, _)| *n == p.series)
                            .and_then(|(_, pts)| pts.iter().find(|(c, _)| *c == p.gpu_blocks))
                            .map(|&(_, v)| v)
                    });
                    num_cell(out, v, true);
                }
                out.push_str("</tr>\n");
            }
        }
    }
    out.push_str("</tbody></table></div>\n");
}

fn params_list(out: &mut String, params: impl IntoIterator<Item = (String, String)>) {
    out.push_str("<dl class=\"params\">");
    for (k, v) in params {
        let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", esc(&k), esc(&v));
    }
    out.push_str("</dl>\n");
}

const FAILED_KEYS: &[&str] = &[
    "point_index",
    "trace",
    "model",
    "policy",
    "policy_config",
    "gpu_size",
    "gpu_blocks",
    "cpu_size",
    "disk_size",
    "hit_semantics",
    "pinning",
    "point_id",
];

fn failed_table(out: &mut String, rows: &[Value], failed: &[usize]) {
    let keys: Vec<&str> = FAILED_KEYS
        .iter()
        .copied()
        .filter(|k| {
            failed.iter().any(|&i| match rows[i].get(*k) {
                None | Some(Value::Null) => false,
                // a bare policy name repeats `policy`
                Some(Value::String(_)) if *k == "policy_config" => false,
                Some(_) => true,
            })
        })
        .collect();
    out.push_str("<div class=\"scroll\"><table class=\"sortable failed\"><thead><tr>");
    for k in &keys {
        let _ = write!(out, "<th class=\"t\">{k}</th>");
    }
    out.push_str("<th class=\"t\">error</th></tr></thead><tbody>");
    for &i in failed {
        out.push_str("<tr>");
        for k in &keys {
            let v = match rows[i].get(*k) {
                None | Some(Value::Null) if k.starts_with("cpu_") || k.starts_with("disk_") => {
                    "off".to_string()
                }
                None | Some(Value::Null) => String::new(),
                Some(v) => short_value(v),
            };
            text_cell(out, &v);
        }
        let err = rows[i].get("error").map(short_value).unwrap_or_default();
        let _ = write!(out, "<td class=\"err\" data-v=\"{0}\">{0}</td>", esc(&err));
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div>\n");
}

/// Strip the XML namespace (not needed inline in HTML) and let the chart scale with the page.
fn inline_svg(svg: &str) -> String {
    let svg = svg.trim_start();
    let svg = match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    };
    svg.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)
        .replacen("<svg ", "<svg role=\"img\" ", 1)
}

/// One fleet group's section (`fleet.rs`): its charts and a table per router and size.
pub(crate) fn fleet_section(
    out: &mut String,
    rows: &[Value],
    groups: &[crate::fleet::FleetGroup],
    i: usize,
    label: &str,
    figures: &[Figure],
) {
    let g = &groups[i];
    let _ = writeln!(
        out,
        "<section id=\"fleet-{}\"><h2>Fleet{}{}</h2>\n<p>N replicas behind a router \
         (<code>replicas</code> and <code>routers</code> in a <code>batch</code> grid, or \
         <code>simulate --replicas</code>); every size is one replica's. TTFT is the time \
         model's estimate. See docs/replicas.md.</p>",
        i + 1,
        if label.is_empty() { "" } else { ": " },
        esc(label)
    );
    if !g.duplicates.is_empty() {
        let _ = writeln!(
            out,
            "<p class=\"note\">{} rows repeat a router and fleet size already in this set and \
             were left out.</p>",
            g.duplicates.len()
        );
    }
    for f in figures {
        let _ = writeln!(
            out,
            "<figure>{}<figcaption>{} &middot; <a href=\"{}\">PNG</a> &middot; \
             <a href=\"{}\">SVG</a></figcaption></figure>",
            inline_svg(&f.svg),
            esc(&f.title),
            esc(&f.png),
            esc(&f.svg_file)
        );
    }
    out.push_str("<h3>Fleet points (click a column to sort)</h3>\n");
    crate::fleet::table(out, rows, g);
    out.push_str("</section>\n");
}

pub(crate) fn report(
    title: &str,
    rows: &[Value],
    a: &Analysis,
    sections: &[Section],
    fleet_html: &str,
) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{0}</title><style>{CSS}</style></head><body><main>\n<h1>{0}</h1>\n",
        esc(title)
    );
    let points: usize = a.groups.iter().map(|g| g.points.len()).sum();
    let _ = writeln!(
        out,
        "<p class=\"meta\">{} rows: {points} points in {} chart set{}{}, {} failed point{}{}. \
         Made by inferencelab {} (<code>inferencelab plot</code>).</p>",
        rows.len(),
        a.groups.len(),
        if a.groups.len() == 1 { "" } else { "s" },
        match rows
            .iter()
            .filter(|r| crate::fleet::is_fleet_row(r))
            .count()
        {
            0 => String::new(),
            n => format!(", {n} fleet rows (replicas behind a router)"),
        },
        a.failed.len(),
        if a.failed.len() == 1 { "" } else { "s" },
        if a.skipped.is_empty() {
            String::new()
        } else {
            format!(", {} rows not plottable", a.skipped.len())
        },
        env!("CARGO_PKG_VERSION"),
    );
    if !a.common.is_empty() {
        out.push_str("<h3>Parameters shared by every point</h3>\n");
        params_list(
            &mut out,
            a.common.iter().map(|(k, v)| (k.clone(), short_value(v))),
        );
    }
    if sections.len() > 1 || !a.failed.is_empty() {
        out.push_str("<nav><h3>Contents</h3><ul>");
        for (i, s) in sections.iter().enumerate() {
            let _ = write!(
                out,
                "<li><a href=\"#set-{}\">{}</a></li>",
                i + 1,
                esc(&section_heading(i, s, sections.len()))
            );
        }
        if !a.failed.is_empty() {
            out.push_str("<li><a href=\"#failed\">Failed points</a></li>");
        }
        if sections.len() > 1 {
            out.push_str("<li><a href=\"#all-points\">All points</a></li>");
        }
        out.push_str("</ul></nav>\n");
    }
    if !a.failed.is_empty() {
        failed_section(&mut out, rows, &a.failed);
    }
    if !a.skipped.is_empty() {
        out.push_str("<h3>Rows that could not be plotted</h3><ul>");
        for (i, reason) in &a.skipped {
            let _ = write!(out, "<li>row {}: {}</li>", i + 1, esc(reason));
        }
        out.push_str("</ul>\n");
    }
    let label_keys = a.label_keys();
    for (i, s) in sections.iter().enumerate() {
        let _ = writeln!(
            out,
            "<section id=\"set-{}\"><h2>{}</h2>",
            i + 1,
            esc(&section_heading(i, s, sections.len()))
        );
        let own: Vec<(String, String)> = label_keys
            .iter()
            .map(|k| (k.clone(), param_display(s.group.params.get(k), k)))
            .collect();
        if !own.is_empty() {
            params_list(&mut out, own);
        }
        if !s.group.duplicates.is_empty() {
            let _ = writeln!(
                out,
                "<p class=\"note\">{} rows repeat a policy and capacity already in this set and \
                 were left out (rows {}).</p>",
                s.group.duplicates.len(),
                s.group
                    .duplicates
                    .iter()
                    .map(|r| (r + 1).to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for f in &s.figures {
            let _ = writeln!(
                out,
                "<figure>{}<figcaption>{} &middot; <a href=\"{}\">PNG</a> &middot; \
                 <a href=\"{}\">SVG</a></figcaption></figure>",
                inline_svg(&f.svg),
                esc(&f.title),
                esc(&f.png),
                esc(&f.svg_file)
            );
        }
        out.push_str("<h3>Points (click a column to sort)</h3>\n");
        points_table(&mut out, rows, &[s.group], &[]);
        out.push_str("</section>\n");
    }
    if sections.len() > 1 {
        out.push_str(
            "<h2 id=\"all-points\">All points</h2>\n<p>Every plotted point of the grid, with \
             the parameters that tell the chart sets apart; click a column to sort.</p>\n",
        );
        let groups: Vec<&Group> = sections.iter().map(|s| s.group).collect();
        points_table(&mut out, rows, &groups, &label_keys);
    }
    out.push_str(fleet_html);
    let _ = write!(out, "<script>{JS}</script>\n</main></body></html>\n");
    out
}

/// The failed points: their distinct reasons first (a grid often fails many points for one
/// reason), then their table.
fn failed_section(out: &mut String, rows: &[Value], failed: &[usize]) {
    let _ = write!(
        out,
        "<h2 id=\"failed\">Failed points ({})</h2>\n<p class=\"note\">These points \
         did not run; they have no figures and are in no chart.</p>\n",
        failed.len()
    );
    // the distinct reasons first: a grid often fails many points for one reason
    let mut reasons: Vec<(String, usize)> = Vec::new();
    for &i in failed {
        let e = rows[i].get("error").map(short_value).unwrap_or_default();
        match reasons.iter_mut().find(|(r, _)| *r == e) {
            Some((_, n)) => *n += 1,
            None => reasons.push((e, 1)),
        }
    }
    out.push_str("<ul>");
    for (reason, n) in &reasons {
        let _ = write!(out, "<li>{n} &times; <code>{}</code></li>", esc(reason));
    }
    out.push_str("</ul>\n");
    failed_table(out, rows, failed);
}

fn section_heading(i: usize, s: &Section, n: usize) -> String {
    if n == 1 || s.label.is_empty() {
        "Results".to_string()
    } else {
        format!("{}. {}", i + 1, s.label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_numbers() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(-1000.0), "-1,000");
        assert_eq!(thousands(12.5), "12.500");
        let svg = "<svg width=\"10\" height=\"10\" viewBox=\"0 0 10 10\" xmlns=\"http://www.w3.org/2000/svg\">\n</svg>";
        let inl = inline_svg(svg);
        assert!(!inl.contains("http"), "{inl}");
        assert!(inl.starts_with("<svg role=\"img\" width=\"10\""), "{inl}");
    }
}

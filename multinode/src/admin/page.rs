//! The status page: one small HTML page, read at a glance, that refreshes
//! itself every 2 s (a `<meta>` refresh: no script).

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

use crate::shm::board::{LastExit, SlotState};
use crate::shm::load_table::{now_ms, TABLE_SLOTS};
use crate::shm::segment::Segment;

const STYLE: &str = r#"
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem auto; max-width: 72rem; padding: 0 1rem; color: #1d2430; background: #f6f7f9; }
h1 { font-size: 1.35rem; margin: 0 0 .2rem; }
p.sub { color: #5b6575; margin: 0 0 1.2rem; }
section { background: #fff; border: 1px solid #e1e4ea; border-radius: 10px; padding: 1rem 1.2rem; margin-bottom: 1.2rem; box-shadow: 0 1px 2px rgba(0,0,0,.04); overflow-x: auto; }
h2 { font-size: 1rem; margin: 0 0 .6rem; color: #39424f; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; font-size: .9rem; }
th, td { text-align: right; padding: .35rem .45rem; border-bottom: 1px solid #eef0f3; white-space: nowrap; }
th:first-child, td:first-child, th.l, td.l { text-align: left; }
th { font-weight: 600; color: #5b6575; font-size: .72rem; text-transform: uppercase; letter-spacing: .03em; }
tr:last-child td { border-bottom: 0; }
.state { display: inline-block; padding: .05rem .55rem; border-radius: 999px; font-size: .82rem; font-weight: 600; }
.serving { background: #e3f6e8; color: #17713a; }
.starting { background: #e5effd; color: #1f5bb5; }
.draining { background: #fff3d6; color: #8a5a00; }
.backing-off { background: #fde4e4; color: #a22; }
.ended, .empty { background: #eceef1; color: #5b6575; }
ol { margin: 0; padding-left: 1.2rem; font-size: .9rem; }
li { margin: .15rem 0; }
time { color: #7a8494; font-variant-numeric: tabular-nums; margin-right: .5rem; }
.totals td { font-weight: 600; }
"#;

/// The page for the slots the board has a process for.
pub(super) fn render(shm: &Segment, per_second: &[f64], events: &[(SystemTime, String)]) -> String {
    let board = shm.board();
    let now = now_ms();
    let slots: Vec<usize> = (0..TABLE_SLOTS)
        .filter(|s| board.process(*s).state() != SlotState::Empty)
        .collect();
    let serving = slots
        .iter()
        .filter(|s| board.process(**s).state() == SlotState::Serving)
        .count();
    let mut rows = String::new();
    let (mut open_all, mut rate_all, mut requests_all) = (0u64, 0f64, 0u64);
    for slot in &slots {
        let line = board.process(*slot);
        let state = line.state();
        let pid = line.pid.load(Relaxed);
        let started = line.started_ms.load(Relaxed);
        let uptime = match (state, started) {
            (SlotState::Serving | SlotState::Starting | SlotState::Draining, s) if s != 0 => {
                duration(now.saturating_sub(s))
            }
            _ => "–".to_owned(),
        };
        let open = shm.table().open_now(*slot);
        let requests = shm.table().totals(*slot).1;
        let rate = per_second.get(*slot).copied().unwrap_or(0.0);
        let rss = crate::metrics::rss_bytes(pid).map_or("–".to_owned(), |b| {
            format!("{:.1} MiB", b as f64 / 1048576.0)
        });
        let exit = match line.last_exit() {
            LastExit::None => "–".to_owned(),
            LastExit::Code(code) => format!("exit {code}"),
            LastExit::Signal(signal) => format!("signal {signal}"),
        };
        (open_all, rate_all, requests_all) = (
            open_all + u64::from(open),
            rate_all + rate,
            requests_all + requests,
        );
        let _ = write!(
            rows,
            "<tr><td>{slot}</td><td>{pid}</td><td>{}</td><td class=l><span class=\"state {}\">{}</span></td>\
             <td>{uptime}</td><td>{open}</td><td>{rate:.0}</td><td>{requests}</td><td>{}</td><td>{exit}</td><td>{rss}</td></tr>",
            line.generation.load(Relaxed),
            state.name().replace(' ', "-"),
            state.name(),
            line.restarts.load(Relaxed),
        );
    }
    let supervisor = board.supervisor();
    let mut journal = String::new();
    for (at, event) in events.iter().rev() {
        let _ = write!(
            journal,
            "<li><time>{}</time>{}</li>",
            clock(*at),
            escape(event)
        );
    }
    if journal.is_empty() {
        journal.push_str("<li>nothing yet</li>");
    }
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta http-equiv=refresh content=2>\
         <meta name=viewport content=\"width=device-width, initial-scale=1\"><title>multinode: {serving} of {} nodes serving</title>\
         <style>{STYLE}</style></head><body>\
         <h1>multinode</h1><p class=sub>master pid {} · {serving} of {} nodes serving · {} reloads · {} failed starts · {} watchdog kills · refreshes every 2 s</p>\
         <section><h2>Nodes</h2><table><thead><tr><th>node</th><th>pid</th><th>generation</th><th class=l>state</th><th>uptime</th>\
         <th>open</th><th>req/s</th><th>requests</th><th>restarts</th><th>last exit</th><th>memory</th></tr></thead><tbody>{rows}\
         <tr class=totals><td>all</td><td></td><td></td><td></td><td></td><td>{open_all}</td><td>{rate_all:.0}</td><td>{requests_all}</td><td></td><td></td><td></td></tr>\
         </tbody></table></section>\
         <section><h2>Recent events</h2><ol reversed>{journal}</ol></section></body></html>\n",
        slots.len(),
        std::process::id(),
        slots.len(),
        supervisor.reloads.load(Relaxed),
        supervisor.boot_failures.load(Relaxed),
        supervisor.watchdog_kills.load(Relaxed),
    )
}

fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s / 60 % 60),
    }
}

/// `HH:MM:SS` (UTC) of `at`.
fn clock(at: SystemTime) -> String {
    let s = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{:02}:{:02}:{:02}", s / 3600 % 24, s / 60 % 60, s % 60)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_per_node_and_the_events_escaped() {
        let shm = Segment::create().unwrap();
        for slot in 0..3 {
            let line = shm.board().process(slot);
            line.set_state(SlotState::Serving);
            line.pid.store(100 + slot as u32, Relaxed);
        }
        let events = vec![(SystemTime::now(), "node 1 exited <signal 9>".to_owned())];
        let html = render(&shm, &[], &events);
        for pid in ["<td>100</td>", "<td>101</td>", "<td>102</td>"] {
            assert!(html.contains(pid), "{html}");
        }
        assert!(html.contains("3 of 3 nodes serving"));
        assert!(html.contains("&lt;signal 9&gt;"));
        assert_eq!(duration(3_723_000), "1 h 2 min");
    }
}

//! Inline SVG charts for the status page: pure functions from numbers to markup, so they cost
//! nothing to serve and draw under a CSP that allows no script and no inline style (colours
//! come from classes in `ui.css`).

use std::fmt::Write;

use crate::model::Millis;
use crate::service::{HourOutcomes, Percentiles};

use super::pages::esc;

const W: f64 = 480.0;
const H: f64 = 140.0;
/// Room for the axis labels at the bottom and left.
const BOTTOM: f64 = 18.0;
const LEFT: f64 = 34.0;

fn hh(t: Millis) -> String {
    let secs_of_day = (t / 1000).rem_euclid(86_400);
    format!("{:02}:00", secs_of_day / 3600)
}

/// A round number at or above `max` for the top of an axis.
fn nice_ceiling(max: f64) -> f64 {
    if max <= 1.0 {
        return 1.0;
    }
    let mag = 10f64.powf(max.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        if step * mag >= max {
            return step * mag;
        }
    }
    10.0 * mag
}

fn open(out: &mut String, label: &str) {
    let _ = write!(
        out,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">",
        esc(label)
    );
}

fn axes(out: &mut String, top: &str, first_hour: Option<Millis>, n: usize) {
    let base = H - BOTTOM;
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{base}\" x2=\"{W}\" y2=\"{base}\"/>\
         <text class=\"lbl\" x=\"{}\" y=\"12\" text-anchor=\"end\">{}</text>\
         <text class=\"lbl\" x=\"{}\" y=\"{base}\" text-anchor=\"end\">0</text>",
        LEFT - 4.0,
        esc(top),
        LEFT - 4.0
    );
    if let Some(first) = first_hour {
        let slot = (W - LEFT) / n as f64;
        for i in (0..n).step_by(6) {
            let x = LEFT + slot * i as f64;
            let _ = write!(
                out,
                "<text class=\"lbl\" x=\"{x:.1}\" y=\"{}\">{}</text>",
                H - 4.0,
                hh(first + i as Millis * 3_600_000)
            );
        }
    }
}

/// Stacked bars: messages created per hour, by where they ended up (times in UTC).
pub fn outcome_bars(hours: &[HourOutcomes]) -> String {
    let mut out = String::new();
    open(&mut out, "Messages per hour by outcome, last 24 hours");
    let max = hours.iter().map(|h| h.total()).max().unwrap_or(0) as f64;
    let top = nice_ceiling(max);
    axes(
        &mut out,
        &format!("{top}"),
        hours.first().map(|h| h.hour),
        hours.len().max(1),
    );
    let slot = (W - LEFT) / hours.len().max(1) as f64;
    let scale = (H - BOTTOM - 14.0) / top;
    for (i, h) in hours.iter().enumerate() {
        let x = LEFT + slot * i as f64 + 1.0;
        let mut y = H - BOTTOM;
        for (class, n) in [
            ("delivered", h.delivered),
            ("sent", h.sent),
            ("failed", h.failed),
            ("expired", h.expired),
            ("waiting", h.waiting),
        ] {
            if n == 0 {
                continue;
            }
            let height = n as f64 * scale;
            y -= height;
            let _ = write!(
                out,
                "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" \
                 height=\"{height:.1}\"><title>{} {n} {class}</title></rect>",
                (slot - 2.0).max(1.0),
                hh(h.hour)
            );
        }
    }
    out.push_str("</svg>");
    out
}

fn seconds(ms: Millis) -> String {
    let s = ms as f64 / 1000.0;
    if s < 10.0 {
        format!("{s:.1} s")
    } else {
        format!("{s:.0} s")
    }
}

/// The median and 90th percentile of delivery latency per hour, as lines; hours without a
/// delivered message leave a gap instead of pretending to be zero.
pub fn latency_lines(first_hour: Option<Millis>, latency: &[Percentiles]) -> String {
    let mut out = String::new();
    open(
        &mut out,
        "Delivery latency per hour (median and 90th percentile), last 24 hours",
    );
    let max = latency.iter().map(|p| p.p90).max().unwrap_or(0) as f64;
    let top = nice_ceiling(max / 1000.0) * 1000.0;
    axes(
        &mut out,
        &seconds(top as Millis),
        first_hour,
        latency.len().max(1),
    );
    let slot = (W - LEFT) / latency.len().max(1) as f64;
    let scale = (H - BOTTOM - 14.0) / top;
    for (class, pick) in [
        (
            "p90",
            (|p: &Percentiles| p.p90) as fn(&Percentiles) -> Millis,
        ),
        ("p50", |p: &Percentiles| p.p50),
    ] {
        let mut run: Vec<(f64, f64)> = Vec::new();
        let flush = |run: &mut Vec<(f64, f64)>, out: &mut String| {
            if run.len() == 1 {
                let (x, y) = run[0];
                let _ = write!(
                    out,
                    "<circle class=\"{class}\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2\"/>"
                );
            } else if run.len() > 1 {
                let pts: Vec<String> = run.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
                let _ = write!(
                    out,
                    "<polyline class=\"{class}\" points=\"{}\"/>",
                    pts.join(" ")
                );
            }
            run.clear();
        };
        for (i, p) in latency.iter().enumerate() {
            if p.samples == 0 {
                flush(&mut run, &mut out);
                continue;
            }
            let x = LEFT + slot * (i as f64 + 0.5);
            run.push((x, H - BOTTOM - pick(p) as f64 * scale));
        }
        flush(&mut run, &mut out);
    }
    out.push_str("</svg>");
    out
}

/// dBm range of `+CSQ` (TS 27.007 §8.5: rssi 0 = -113 dBm or less, 31 = -51 dBm or more).
const DBM_MIN: f64 = -113.0;
const DBM_MAX: f64 = -51.0;

/// A small line of signal samples `(time, dBm)`, oldest first.
pub fn signal_spark(samples: &[(Millis, i32)]) -> String {
    let (w, h) = (160.0, 36.0);
    let mut out = format!(
        "<svg class=\"spark\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"Signal history\">"
    );
    if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
        let span = (last.0 - first.0).max(1) as f64;
        let pts: Vec<String> = samples
            .iter()
            .map(|(t, dbm)| {
                let x = if samples.len() == 1 {
                    w
                } else {
                    (t - first.0) as f64 / span * w
                };
                let v = (*dbm as f64).clamp(DBM_MIN, DBM_MAX);
                let y = h - 2.0 - (v - DBM_MIN) / (DBM_MAX - DBM_MIN) * (h - 4.0);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        if pts.len() == 1 {
            let _ = write!(
                out,
                "<circle class=\"sig\" cx=\"{}\" r=\"2\" cy=\"{}\"/>",
                w - 2.0,
                pts[0].split(',').nth(1).unwrap_or("0")
            );
        } else {
            let _ = write!(
                out,
                "<polyline class=\"sig\" points=\"{}\"/>",
                pts.join(" ")
            );
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_stack_per_outcome_and_skip_empty_hours() {
        let hours: Vec<HourOutcomes> = (0..24)
            .map(|i| HourOutcomes {
                hour: i * 3_600_000,
                delivered: if i == 23 { 3 } else { 0 },
                failed: if i == 23 { 1 } else { 0 },
                ..HourOutcomes::default()
            })
            .collect();
        let svg = outcome_bars(&hours);
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains("class=\"delivered\"") && svg.contains("class=\"failed\""));
        assert!(svg.contains(">00:00<") && svg.contains(">18:00<"));
        assert!(!svg.contains("style="), "the CSP forbids inline style");
    }

    #[test]
    fn latency_gaps_are_gaps() {
        let p = |ms| Percentiles {
            samples: 1,
            p50: ms,
            p90: ms * 2,
            p99: ms * 3,
        };
        let mut lat = vec![Percentiles::default(); 24];
        lat[3] = p(1000);
        lat[4] = p(2000);
        lat[10] = p(500);
        let svg = latency_lines(Some(0), &lat);
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        assert_eq!(svg.matches("<circle").count(), 2, "{svg}");
        assert!(svg.contains(">5.0 s<"), "{svg}");
    }

    #[test]
    fn nice_axis_tops() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(11.0), 20.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
    }

    #[test]
    fn signal_points_stay_in_the_box() {
        let svg = signal_spark(&[(0, -120), (1000, -70), (2000, -40)]);
        assert!(svg.contains("points=\"0.0,34.0 80.0,"), "{svg}");
        assert!(svg.contains("160.0,2.0"), "{svg}");
        assert!(!signal_spark(&[]).contains("polyline"));
    }
}

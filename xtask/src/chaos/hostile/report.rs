//! The hostile scenario's report: what the good peer and the target saw in
//! an attack's window ([`Seen`]), and the attack's row of the table with its
//! checks ([`judge`]).

use super::*;

fn in_window(lines: &[Line], from: Instant, to: Instant) -> Vec<&Line> {
    lines.iter().filter(|l| l.at >= from && l.at < to).collect()
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// What the good peer and the target saw in one window.
pub(super) struct Seen {
    pub(super) rtt_p50: Option<f64>,
    pub(super) pings: usize,
    pub(super) dht_p50: Option<f64>,
    pub(super) tasks_per_sec: f64,
    pub(super) joined: f64,
    pub(super) refused: f64,
    pub(super) published: f64,
    pub(super) delivered: f64,
    pub(super) late_ms_max: f64,
}

impl Seen {
    fn join_share(&self) -> f64 {
        self.joined / (self.joined + self.refused).max(1.0)
    }

    fn gossip_share(&self) -> f64 {
        self.delivered / self.published.max(1.0)
    }
}

pub(super) fn seen(bed: &Bed<'_>, from: Instant, to: Instant, secs: (u64, u64)) -> Seen {
    let samples = bed.good.events("sample");
    let window = in_window(&samples, from, to);
    let rtts: Vec<f64> = window
        .iter()
        .flat_map(|l| json::nums(&l.text, "rtts_ms"))
        .collect();
    let dht: Vec<f64> = window
        .iter()
        .flat_map(|l| json::nums(&l.text, "dht_rtts_ms"))
        .collect();
    let sum = |key: &str| window.iter().map(|l| json::num(&l.text, key)).sum::<f64>();
    let in_secs = |l: &Line| (secs.0..secs.1).contains(&(json::num(&l.text, "sec") as u64));
    let published: f64 = bed
        .good
        .events("gossip")
        .iter()
        .filter(|l| in_secs(l))
        .map(|l| json::num(&l.text, "sent"))
        .sum();
    let delivered_lines = bed.target.events("gossip");
    let delivered: Vec<&Line> = delivered_lines.iter().filter(|l| in_secs(l)).collect();
    Seen {
        pings: rtts.len(),
        rtt_p50: median(rtts),
        dht_p50: median(dht),
        tasks_per_sec: sum("tasks_done") / (to - from).as_secs_f64().max(0.001),
        joined: sum("joins_ok"),
        refused: sum("joins_failed"),
        published,
        delivered: delivered
            .iter()
            .map(|l| json::num(&l.text, "delivered"))
            .sum(),
        late_ms_max: delivered
            .iter()
            .map(|l| json::num(&l.text, "late_ms_max"))
            .fold(0.0, f64::max),
    }
}

/// The target's status lines in `[from, to)`: the most of `key`.
fn status_max(bed: &Bed<'_>, from: Instant, to: Instant, key: &str) -> f64 {
    in_window(&bed.target.events("status"), from, to)
        .iter()
        .map(|l| json::num(&l.text, key))
        .fold(0.0, f64::max)
}

/// The target's last status line before `at`.
fn status_at(bed: &Bed<'_>, at: Instant) -> Option<Line> {
    bed.target
        .events("status")
        .into_iter()
        .rfind(|l| l.at <= at)
}

/// Counter `key` of a status line's `counters` object (0 when missing).
fn counter(line: Option<&Line>, key: &str) -> f64 {
    line.and_then(|l| json::field(&l.text, "counters"))
        .map_or(0.0, |c| json::num(c, key))
}

pub(super) const MIB: f64 = 1024.0;

/// Adds `run`'s row to the table and its checks to `outcome`.
pub(super) fn judge(bed: &Bed<'_>, run: &Run, log: &str, outcome: &mut Outcome) {
    let kind = run.attack.kind;
    let s = seen(bed, run.from, run.to, run.secs);
    let report = run.attacker.last("attack");
    let num = |key: &str| report.as_ref().map_or(0.0, |l| json::num(&l.text, key));
    let extra = |key: &str| {
        report
            .as_ref()
            .and_then(|l| json::field(&l.text, "extra"))
            .map_or(0.0, |e| json::num(e, key))
    };
    let c = &run.counts;
    let attacker_pkts = c.packets(counters::ATTACKER_OUT);
    let per_pkt = |n: u64| n as f64 / attacker_pkts.max(1) as f64;
    let sink = c.packets(counters::TO_SINK);
    let sink_syn = c.packets(counters::SYN_TO_SINK);
    let loopback = c.packets(counters::LOOPBACK_SYN);
    let to_attacker_syn = c.packets(counters::TARGET_SYN_ATTACKER);
    let reply_ratio = c.bytes(counters::TARGET_TO_ATTACKER) as f64
        / c.bytes(counters::ATTACKER_TO_TARGET).max(1) as f64;
    let end = run.to + SETTLE;
    let rss_max = bed
        .rss
        .iter()
        .filter(|(t, _)| *t >= run.from && *t <= end)
        .map(|(_, kib)| *kib)
        .max()
        .unwrap_or(0);
    let (before, after) = (status_at(bed, run.from), status_at(bed, end));
    let jobs = |l: &Option<Line>| l.as_ref().map_or(0.0, |l| json::num(&l.text, "jobs"));
    let tasks_alive = |l: &Option<Line>| {
        l.as_ref()
            .map_or(0.0, |l| json::num(&l.text, "tasks_alive"))
    };
    let tasks_most = status_max(bed, run.from, end, "tasks_alive");
    let mut notes = match run.attack.check {
        Check::NoCircuit => format!("circuits accepted {}", extra("accepted")),
        Check::PunchBound(_) => format!(
            "{} punches, holepunch attempts {}",
            num("sent"),
            counter(after.as_ref(), "holepunch_attempts")
                - counter(before.as_ref(), "holepunch_attempts")
        ),
        Check::Providers { .. } => format!(
            "{} keys sent, {} held ({}/{} sampled)",
            num("sent"),
            extra("held_estimate"),
            extra("held_sampled"),
            extra("sampled")
        ),
        Check::Charged => format!(
            "{} forged, gossip invalid +{}",
            num("sent"),
            counter(after.as_ref(), "gossip_messages.invalid")
                - counter(before.as_ref(), "gossip_messages.invalid")
        ),
        Check::NoReplay => format!(
            "{} recorded, {} replayed, redelivered +{}",
            extra("recorded"),
            num("sent"),
            after
                .as_ref()
                .map_or(0.0, |l| json::num(&l.text, "redelivered"))
                - before
                    .as_ref()
                    .map_or(0.0, |l| json::num(&l.text, "redelivered"))
        ),
        Check::Cut(_) if kind == "slowloris" => {
            let dropped = |r: &str| {
                let key = format!("connections_dropped.{r}");
                counter(after.as_ref(), &key) - counter(before.as_ref(), &key)
            };
            format!(
                "held {} at once; dropped: rate {}, evicted {}, first_byte {}",
                extra("held_max"),
                dropped("rate"),
                dropped("evicted"),
                dropped("first_byte")
            )
        }
        _ => String::new(),
    };
    if !notes.is_empty() {
        notes.push_str("; ");
    }
    notes.push_str(&format!(
        "jobs {}->{}, tasks {}->{} (most {tasks_most})",
        jobs(&before),
        jobs(&after),
        tasks_alive(&before),
        tasks_alive(&after)
    ));
    let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
    let passed_before = outcome.failures.len();
    // Common checks.
    outcome.check(
        report.is_some(),
        format!("{kind}: the attacker did not report"),
    );
    outcome.check(
        s.pings > 0,
        format!("{kind}: the good peer got no ping answer"),
    );
    outcome.check(
        s.tasks_per_sec > 0.0,
        format!("{kind}: the good peer got no task done"),
    );
    outcome.check(
        s.joined + s.refused > 0.0 && s.join_share() >= JOIN_SHARE,
        format!(
            "{kind}: {}/{} fresh sessions got in (need {:.0} %)",
            s.joined,
            s.joined + s.refused,
            JOIN_SHARE * 100.0
        ),
    );
    outcome.check(
        s.published > 0.0 && s.gossip_share() >= JOIN_SHARE,
        format!(
            "{kind}: the target delivered {:.0}/{:.0} of the good peer's gossip messages",
            s.delivered, s.published
        ),
    );
    outcome.check(
        sink == 0 && loopback == 0,
        format!(
            "{kind}: {sink} packets ({sink_syn} SYNs) reached the sink and {loopback} SYNs the \
             target's loopback (from this attack or left over from an earlier one)"
        ),
    );
    let (rss_before, rss_after) = (run.rss_before as f64 / MIB, run.rss_after as f64 / MIB);
    let rss_most = rss_max as f64 / MIB;
    match run.attack.check {
        Check::Cut(patterns) => {
            outcome.check(
                num("cut") > 0.0,
                format!("{kind}: the target never cut the attacker"),
            );
            for p in patterns {
                outcome.check(
                    log.contains(p),
                    format!("{kind}: no \"{p}\" in the target's log"),
                );
            }
        }
        Check::NoCircuit => outcome.check(
            extra("accepted") == 0.0,
            format!(
                "{kind}: the target accepted {} circuits from a peer that is not its relay",
                extra("accepted")
            ),
        ),
        Check::PunchBound(per) => outcome.check(
            to_attacker_syn as f64 <= per as f64 * num("sent").max(1.0),
            format!(
                "{kind}: {to_attacker_syn} connection attempts to the attacker for {} punches",
                num("sent")
            ),
        ),
        Check::Reflection => {}
        Check::Providers { keys, mib } => {
            outcome.check(
                extra("sampled") > 0.0 && extra("held_estimate") <= keys as f64,
                format!(
                    "{kind}: the target holds ~{} of the attacker's provider keys (bound {keys})",
                    extra("held_estimate")
                ),
            );
            outcome.check(
                rss_after - rss_before <= mib as f64,
                format!(
                    "{kind}: RSS grew {:.1} MiB (bound {mib})",
                    rss_after - rss_before
                ),
            );
        }
        Check::Jobs(mib) => {
            outcome.check(
                rss_after - rss_before <= mib as f64,
                format!(
                    "{kind}: RSS grew {:.1} MiB (bound {mib})",
                    rss_after - rss_before
                ),
            );
            outcome.check(
                jobs(&after) <= jobs(&before) + 16.0,
                format!(
                    "{kind}: the target's jobs went from {} to {}",
                    jobs(&before),
                    jobs(&after)
                ),
            );
        }
        Check::SlowReader { tasks, mib } => {
            outcome.check(
                tasks_most - tasks_alive(&before) <= tasks as f64,
                format!(
                    "{kind}: the target's live tasks rose from {} to {tasks_most} (bound +{tasks})",
                    tasks_alive(&before)
                ),
            );
            outcome.check(
                rss_most - rss_before <= mib as f64,
                format!(
                    "{kind}: RSS rose {:.1} MiB during the attack (bound {mib})",
                    rss_most - rss_before
                ),
            );
        }
        Check::Charged => outcome.check(
            num("cut") > 0.0,
            format!(
                "{kind}: the target never closed a forger's channel ({} forged messages)",
                num("sent")
            ),
        ),
        Check::NoReplay => {
            let again = after
                .as_ref()
                .map_or(0.0, |l| json::num(&l.text, "redelivered"))
                - before
                    .as_ref()
                    .map_or(0.0, |l| json::num(&l.text, "redelivered"));
            outcome.check(
                extra("recorded") > 0.0 && again == 0.0,
                format!(
                    "{kind}: {again} replayed messages delivered again ({} recorded)",
                    extra("recorded")
                ),
            );
        }
    }
    let result = if outcome.failures.len() == passed_before {
        "pass"
    } else {
        "FAIL"
    };
    outcome.row(vec![
        kind.to_owned(),
        run.attack.finding.to_owned(),
        result.to_owned(),
        format!("{}/{}", num("cut"), num("attempts")),
        format!("{} / {}", opt(s.rtt_p50), opt(s.dht_p50)),
        format!("{:.0}", s.tasks_per_sec),
        format!("{}/{}", s.joined, s.joined + s.refused),
        format!(
            "{:.0}/{:.0} ({:.0} ms)",
            s.delivered, s.published, s.late_ms_max
        ),
        format!("{rss_before:.0}->{rss_after:.0} ({rss_most:.0})"),
        format!(
            "{:.0}/{:.0} ({sink}/{sink_syn} of {attacker_pkts})",
            per_pkt(sink),
            per_pkt(sink_syn)
        ),
        format!(
            "{:.3} syn, {reply_ratio:.1}x bytes",
            per_pkt(to_attacker_syn)
        ),
        notes,
    ]);
}

/// The table's header.
pub(super) const HEADER: &[&str] = &[
    "attack",
    "finding",
    "result",
    "cut/tries",
    "RTT ms ping/dht",
    "tasks/s",
    "joins",
    "gossip (late)",
    "RSS MiB (max)",
    "sink/attacker pkt (n)",
    "to attacker per pkt",
    "notes",
];

//! What the batch did, collected on rank 0: the summary table, the table
//! of failures, and the metrics file.
//!
//! Each task's outcome is known to its rank 0 only; at the end every rank
//! sends rank 0 its busy time and the outcomes it holds, as lines of text.

use super::schedule::{rank_span, Plan, Slot};
use super::tasks::Task;
use super::WorldComm;
use crate::job::say;
use crate::output::write_atomic;
use crate::run::{json_number, per_rank_json, Done, FIELDS};
use anyhow::Result;
use mpinfer_collectives::{Opts, ReduceOp};
use std::path::Path;

/// One task's result, as rank 0 of the task saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub task: usize,
    pub first_rank: usize,
    pub ranks: usize,
    /// Seconds from the batch's start to the task's start, and its length.
    pub start_s: f64,
    pub wall_s: f64,
    pub rows: usize,
    pub strategy: String,
    pub result: Result<(), String>,
    pub skipped: bool,
    pub per_rank: Vec<[f64; FIELDS.len()]>,
}

impl Outcome {
    pub fn new(slot: &Slot, start_s: f64, wall_s: f64, done: Result<Done>) -> Outcome {
        let (rows, strategy, per_rank, result) = match done {
            Ok(d) => (d.rows, d.strategy, d.per_rank, Ok(())),
            Err(e) => (0, String::new(), Vec::new(), Err(format!("{e:#}"))),
        };
        Outcome {
            task: slot.task,
            first_rank: slot.first_rank,
            ranks: slot.ranks,
            start_s,
            wall_s,
            rows,
            strategy,
            result,
            skipped: false,
            per_rank,
        }
    }

    fn skipped(task: usize) -> Outcome {
        Outcome {
            task,
            first_rank: 0,
            ranks: 0,
            start_s: 0.0,
            wall_s: 0.0,
            rows: 0,
            strategy: String::new(),
            result: Ok(()),
            skipped: true,
            per_rank: Vec::new(),
        }
    }

    pub fn failed(&self) -> bool {
        self.result.is_err()
    }

    fn result_word(&self) -> &'static str {
        match (&self.result, self.skipped) {
            (_, true) => "skipped (finished)",
            (Ok(()), false) => "ok",
            (Err(_), false) => "failed",
        }
    }
}

/// What one rank did in the batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    /// Seconds this rank spent in tasks.
    pub busy_s: f64,
    /// When it was done with its last wave, in seconds since the start.
    pub end_s: f64,
    /// Outcomes of the tasks it was rank 0 of.
    pub led: Vec<Outcome>,
}

impl Record {
    /// Text lines: `busy S END`, then one tab-separated line per outcome, its
    /// message last (tabs and line breaks in it made spaces).
    fn encode(&self) -> String {
        let mut text = format!("busy\t{}\t{}\n", self.busy_s, self.end_s);
        for o in &self.led {
            let per_rank: Vec<String> = o
                .per_rank
                .iter()
                .map(|r| r.iter().map(f64::to_string).collect::<Vec<_>>().join(","))
                .collect();
            let (word, message) = match &o.result {
                Ok(()) => ("ok", String::new()),
                Err(m) => ("failed", m.replace(['\t', '\n'], " ")),
            };
            text.push_str(&format!(
                "task\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{word}\t{message}\n",
                o.task,
                o.first_rank,
                o.ranks,
                o.start_s,
                o.wall_s,
                o.rows,
                o.strategy,
                per_rank.join(";")
            ));
        }
        text
    }

    fn decode(text: &str) -> Option<Record> {
        let mut record = Record::default();
        for line in text.lines() {
            let f: Vec<&str> = line.splitn(11, '\t').collect();
            match f[..] {
                ["busy", busy, end] => {
                    record.busy_s = busy.parse().ok()?;
                    record.end_s = end.parse().ok()?;
                }
                ["task", task, first, ranks, start, wall, rows, strategy, per_rank, word, message] =>
                {
                    let per_rank = per_rank
                        .split(';')
                        .filter(|r| !r.is_empty())
                        .map(|r| {
                            let v: Vec<f64> = r
                                .split(',')
                                .map(|x| x.parse().ok())
                                .collect::<Option<_>>()?;
                            v.try_into().ok()
                        })
                        .collect::<Option<Vec<_>>>()?;
                    record.led.push(Outcome {
                        task: task.parse().ok()?,
                        first_rank: first.parse().ok()?,
                        ranks: ranks.parse().ok()?,
                        start_s: start.parse().ok()?,
                        wall_s: wall.parse().ok()?,
                        rows: rows.parse().ok()?,
                        strategy: strategy.to_string(),
                        result: if word == "ok" {
                            Ok(())
                        } else {
                            Err(message.to_string())
                        },
                        skipped: false,
                        per_rank,
                    });
                }
                _ => return None,
            }
        }
        Some(record)
    }
}

/// Every rank's record on rank 0 (rank by rank); nothing elsewhere.
pub fn gather(world: &WorldComm, mine: &Record) -> Result<Vec<Record>> {
    let text = mine.encode().into_bytes();
    let mut longest = [text.len() as i64];
    world.allreduce(&mut longest, ReduceOp::Max, Opts::default())?;
    let mut padded = text;
    padded.resize(longest[0] as usize, 0);
    let p = world.size();
    let mut all = vec![
        0u8;
        if world.rank() == 0 {
            p * padded.len()
        } else {
            0
        }
    ];
    world.gather(&padded, &mut all, Opts::default())?;
    if world.rank() != 0 {
        return Ok(Vec::new());
    }
    all.chunks(padded.len().max(1))
        .take(p)
        .enumerate()
        .map(|(r, bytes)| {
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            std::str::from_utf8(&bytes[..end])
                .ok()
                .and_then(Record::decode)
                .ok_or_else(|| anyhow::anyhow!("rank {r} sent an unreadable batch record"))
        })
        .collect()
}

/// One outcome per task, in file order.
pub fn outcomes(tasks: &[Task], plan: &Plan, finished: &[bool], all: &[Record]) -> Vec<Outcome> {
    let mut led: Vec<Outcome> = all.iter().flat_map(|r| r.led.iter().cloned()).collect();
    (0..tasks.len())
        .map(|i| {
            if finished[i] {
                return Outcome::skipped(i);
            }
            if let Some(k) = led.iter().position(|o| o.task == i) {
                return led.swap_remove(k);
            }
            // Cannot happen while every slot has a rank 0; said, not hidden.
            let slot = plan
                .waves
                .iter()
                .flat_map(|w| &w.slots)
                .find(|s| s.task == i)
                .cloned()
                .unwrap_or(Slot {
                    task: i,
                    first_rank: 0,
                    ranks: 0,
                    why: String::new(),
                });
            let mut o = Outcome::new(&slot, 0.0, 0.0, Err(anyhow::anyhow!("no rank reported it")));
            o.task = i;
            o
        })
        .collect()
}

/// The table of every task, then the table of failures, on rank 0's stderr.
pub fn summary(tasks: &[Task], outcomes: &[Outcome]) {
    say("batch: task  ranks  wall s    rows      rows/s    result");
    for o in outcomes {
        let t = &tasks[o.task];
        let ranks = if o.skipped {
            "-".to_string()
        } else {
            rank_span(o.first_rank, o.ranks)
        };
        let result = match &o.result {
            Err(m) if !o.skipped => format!("failed: error: {m}"),
            _ => o.result_word().to_string(),
        };
        say(&format!(
            "batch: {:<5} {ranks:<6} {:<9.3} {:<9} {:<9.0} {result}",
            t.number,
            o.wall_s,
            o.rows,
            o.rows as f64 / o.wall_s.max(1e-9)
        ));
    }
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.failed()).collect();
    if failed.is_empty() {
        return;
    }
    say(&format!(
        "error: {} of {} tasks failed (their partial outputs are kept for --resume):",
        failed.len(),
        outcomes.len()
    ));
    for o in failed {
        if let Err(m) = &o.result {
            say(&format!("error: {}: {m}", tasks[o.task].name()));
        }
    }
}

/// JSON with a string's special characters escaped.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The batch's metrics: per task its ranks, times, rows and result (and
/// every rank's run metrics); per rank its busy share and idle time. The
/// batch lasts until its last rank is done.
pub fn write_metrics(
    path: &Path,
    tasks: &[Task],
    outcomes: &[Outcome],
    all: &[Record],
) -> Result<()> {
    let wall = all.iter().map(|r| r.end_s).fold(0.0f64, f64::max);
    let task_json: Vec<String> = outcomes
        .iter()
        .map(|o| task_metrics(&tasks[o.task], o))
        .collect();
    let rank_json: Vec<String> = all
        .iter()
        .enumerate()
        .map(|(r, rec)| {
            format!(
                "    {{\"rank\": {r}, \"busy_s\": {}, \"busy_share\": {}, \"idle_s\": {}}}",
                json_number(rec.busy_s),
                json_number(rec.busy_s / wall.max(1e-9)),
                json_number((wall - rec.busy_s).max(0.0))
            )
        })
        .collect();
    let rows: usize = outcomes.iter().map(|o| o.rows).sum();
    let count = |f: &dyn Fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let json = format!(
        "{{\n  \"batch\": {{\"ranks\": {}, \"tasks\": {}, \"ok\": {}, \"failed\": {}, \"skipped\": {}, \"wall_s\": {}, \"rows\": {rows}, \"rows_per_s\": {}, \"idle_s\": {}}},\n  \"per_rank\": [\n{}\n  ],\n  \"tasks\": [\n{}\n  ]\n}}\n",
        all.len(),
        outcomes.len(),
        count(&|o| !o.skipped && !o.failed()),
        count(&|o| o.failed()),
        count(&|o| o.skipped),
        json_number(wall),
        json_number(rows as f64 / wall.max(1e-9)),
        json_number(all.iter().map(|r| (wall - r.busy_s).max(0.0)).sum()),
        rank_json.join(",\n"),
        task_json.join(",\n")
    );
    write_atomic(path, json.as_bytes())
}

fn task_metrics(t: &Task, o: &Outcome) -> String {
    let error = match &o.result {
        Err(m) => json_string(m),
        Ok(()) => "null".into(),
    };
    format!(
        "    {{\"task\": {}, \"model\": {}, \"output\": {}, \"result\": {}, \"error\": {error}, \"first_rank\": {}, \"ranks\": {}, \"strategy\": {}, \"start_s\": {}, \"wall_s\": {}, \"rows\": {}, \"rows_per_s\": {}, \"per_rank\": [{}{}]}}",
        t.number,
        json_string(&t.args.model.display().to_string()),
        json_string(&t.args.output.display().to_string()),
        json_string(o.result_word()),
        o.first_rank,
        o.ranks,
        json_string(&o.strategy),
        json_number(o.start_s),
        json_number(o.wall_s),
        o.rows,
        json_number(o.rows as f64 / o.wall_s.max(1e-9)),
        if o.per_rank.is_empty() { "" } else { "\n" },
        if o.per_rank.is_empty() {
            String::new()
        } else {
            format!("{}\n    ", per_rank_json(&o.per_rank, "      "))
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_travel_as_text_and_come_back_whole() {
        let record = Record {
            busy_s: 1.25,
            end_s: 2.5,
            led: vec![
                Outcome {
                    task: 3,
                    first_rank: 2,
                    ranks: 2,
                    start_s: 0.5,
                    wall_s: 0.75,
                    rows: 13,
                    strategy: "data".into(),
                    result: Ok(()),
                    skipped: false,
                    per_rank: vec![[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.5, 0.0, 0.0]; 2],
                },
                Outcome {
                    task: 0,
                    first_rank: 0,
                    ranks: 1,
                    start_s: 0.0,
                    wall_s: 0.1,
                    rows: 0,
                    strategy: String::new(),
                    result: Err("x.onnx: bad\tfile".into()),
                    skipped: false,
                    per_rank: Vec::new(),
                },
            ],
        };
        let back = Record::decode(&record.encode()).unwrap();
        assert_eq!(back.led[0], record.led[0]);
        assert_eq!(back.led[1].result, Err("x.onnx: bad file".into()));
        assert_eq!((back.busy_s, back.end_s), (1.25, 2.5));
        assert!(Record::decode("busy\tsoon\t1\n").is_none());
    }

    #[test]
    fn json_strings_escape_quotes_and_control_characters() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }
}

//! Which tasks run when, on which ranks: computed from the task file alone
//! (and the set of finished tasks rank 0 found), so every rank arrives at
//! the same schedule without talking.
//!
//! Tasks start in priority order, P_i = W_i² / Σ_j W_j, ties broken by the
//! order in the file. They run in waves: a wave takes the next tasks in
//! priority order for as long as every task in it still gets its minimum:
//! a task with an explicit `ranks` gets exactly that many; the others
//! share the remaining ranks in proportion to their weights (largest
//! remainder rounding), which must give each at least one rank. The wave
//! runs to its end, and the next wave starts on all the ranks.

use std::fmt::Write as _;

/// What the schedule needs to know of a task.
#[derive(Clone, Copy, Debug)]
pub struct Demand {
    pub weight: f64,
    /// Exactly this many ranks; `None`: a share by weight.
    pub ranks: Option<usize>,
}

/// One task's place in a wave.
#[derive(Clone, Debug, PartialEq)]
pub struct Slot {
    /// Index into the task list.
    pub task: usize,
    pub first_rank: usize,
    pub ranks: usize,
    /// Why it got `ranks`, in words.
    pub why: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Wave {
    pub slots: Vec<Slot>,
    /// Why the wave takes no more tasks (none when the list ran out).
    pub cut: Option<String>,
}

impl Wave {
    /// The slot whose ranks hold `rank`, if any.
    pub fn slot_of(&self, rank: usize) -> Option<&Slot> {
        self.slots
            .iter()
            .find(|s| (s.first_rank..s.first_rank + s.ranks).contains(&rank))
    }
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub ranks: usize,
    pub priorities: Vec<f64>,
    pub weight_sum: f64,
    /// Task indices, highest priority first.
    pub order: Vec<usize>,
    pub waves: Vec<Wave>,
}

#[derive(Debug, thiserror::Error)]
#[error("task {number} asks for {wanted} ranks, but the job has {ranks}")]
pub struct TooManyRanks {
    pub number: usize,
    pub wanted: usize,
    pub ranks: usize,
}

/// P_i = W_i² / ΣW.
pub fn priorities(demands: &[Demand]) -> (Vec<f64>, f64) {
    let sum: f64 = demands.iter().map(|d| d.weight).sum();
    let p = demands.iter().map(|d| d.weight * d.weight / sum).collect();
    (p, sum)
}

/// The schedule of the tasks not `finished` on `ranks` ranks.
pub fn plan(demands: &[Demand], finished: &[bool], ranks: usize) -> Result<Plan, TooManyRanks> {
    if let Some((i, d)) = demands
        .iter()
        .enumerate()
        .find(|(_, d)| d.ranks.is_some_and(|r| r > ranks))
    {
        return Err(TooManyRanks {
            number: i + 1,
            wanted: d.ranks.unwrap_or(0),
            ranks,
        });
    }
    let (priorities, weight_sum) = priorities(demands);
    let mut order: Vec<usize> = (0..demands.len()).collect();
    // Stable: equal priorities keep the file's order.
    order.sort_by(|&a, &b| priorities[b].total_cmp(&priorities[a]));
    let mut left: Vec<usize> = order.iter().copied().filter(|&i| !finished[i]).collect();
    let mut waves = Vec::new();
    while !left.is_empty() {
        let mut taken = vec![left[0]];
        let mut cut = None;
        for &next in &left[1..] {
            let mut trial = taken.clone();
            trial.push(next);
            match shortfall(demands, &trial, ranks) {
                None => taken = trial,
                Some(why) => {
                    cut = Some(format!("task {} waits for the next wave: {why}", next + 1));
                    break;
                }
            }
        }
        left.retain(|i| !taken.contains(i));
        waves.push(Wave {
            slots: split(demands, &taken, ranks),
            cut,
        });
    }
    Ok(Plan {
        ranks,
        priorities,
        weight_sum,
        order,
        waves,
    })
}

/// Why `tasks` cannot all run at once on `ranks` ranks, if they cannot.
fn shortfall(demands: &[Demand], tasks: &[usize], ranks: usize) -> Option<String> {
    let fixed: usize = tasks.iter().filter_map(|&i| demands[i].ranks).sum();
    if fixed > ranks {
        return Some(format!(
            "explicit rank counts would add up to {fixed} of {ranks}"
        ));
    }
    let shared: Vec<usize> = tasks
        .iter()
        .copied()
        .filter(|&i| demands[i].ranks.is_none())
        .collect();
    let weights: f64 = shared.iter().map(|&i| demands[i].weight).sum();
    let spare = ranks - fixed;
    shared.iter().find_map(|&i| {
        let share = spare as f64 * demands[i].weight / weights;
        (share < 1.0).then(|| {
            format!(
                "task {}'s share would be {share:.2} of a rank (weight {} of {} over {spare} ranks)",
                i + 1,
                demands[i].weight,
                weights
            )
        })
    })
}

/// Ranks for the tasks of one wave, contiguous blocks in priority order.
/// The wave was built so that every weighted share is at least one rank.
fn split(demands: &[Demand], tasks: &[usize], ranks: usize) -> Vec<Slot> {
    let fixed: usize = tasks.iter().filter_map(|&i| demands[i].ranks).sum();
    let spare = ranks - fixed;
    let weights: f64 = tasks
        .iter()
        .filter(|&&i| demands[i].ranks.is_none())
        .map(|&i| demands[i].weight)
        .sum();
    let quota = |i: usize| spare as f64 * demands[i].weight / weights;
    let mut counts: Vec<usize> = tasks
        .iter()
        .map(|&i| {
            demands[i]
                .ranks
                .unwrap_or_else(|| quota(i).floor() as usize)
        })
        .collect();
    // Largest remainders first; equal remainders in priority order.
    let mut by_remainder: Vec<usize> = (0..tasks.len())
        .filter(|&k| demands[tasks[k]].ranks.is_none())
        .collect();
    by_remainder.sort_by(|&a, &b| {
        let rem = |k: usize| quota(tasks[k]) - counts[k] as f64;
        rem(b).total_cmp(&rem(a))
    });
    let given: usize = counts.iter().sum();
    let extra: Vec<usize> = by_remainder
        .iter()
        .copied()
        .take(ranks.saturating_sub(given))
        .collect();
    extra.iter().for_each(|&k| counts[k] += 1);
    let mut first = 0;
    tasks
        .iter()
        .zip(&counts)
        .enumerate()
        .map(|(k, (&i, &n))| {
            let why = match demands[i].ranks {
                Some(r) => format!("ranks = {r} in the task file"),
                None => format!(
                    "weight {} of {weights} shares {spare} ranks: {:.2}{}",
                    demands[i].weight,
                    quota(i),
                    if extra.contains(&k) {
                        ", rounded up (largest remainder)"
                    } else {
                        ""
                    }
                ),
            };
            let slot = Slot {
                task: i,
                first_rank: first,
                ranks: n,
                why,
            };
            first += n;
            slot
        })
        .collect()
}

/// `0-2`, or `3` for one rank.
pub fn rank_span(first: usize, count: usize) -> String {
    match count {
        1 => format!("{first}"),
        n => format!("{first}-{}", first + n - 1),
    }
}

impl Plan {
    /// The schedule in lines for people, with the reason for each choice.
    pub fn describe(&self, name: impl Fn(usize) -> String, finished: &[bool]) -> Vec<String> {
        let mut lines = vec![format!(
            "plan: {} tasks on {} ranks; priority P = W*W/sum(W) with sum(W) = {}, highest first, ties in file order; tasks run in waves that take the next tasks while each gets its minimum (its explicit ranks, else 1 of the ranks shared by weight)",
            self.priorities.len(),
            self.ranks,
            self.weight_sum
        )];
        for &i in &self.order {
            let mut line = format!("plan: {} P {:.4}", name(i), self.priorities[i]);
            if finished[i] {
                line.push_str(": skipped, output complete");
            }
            lines.push(line);
        }
        for (w, wave) in self.waves.iter().enumerate() {
            for s in &wave.slots {
                let mut line = String::new();
                let _ = write!(
                    line,
                    "plan: wave {}: {} on rank{} {} ({} rank{}: {})",
                    w + 1,
                    name(s.task),
                    if s.ranks == 1 { "" } else { "s" },
                    rank_span(s.first_rank, s.ranks),
                    s.ranks,
                    if s.ranks == 1 { "" } else { "s" },
                    s.why
                );
                lines.push(line);
            }
            let used: usize = wave.slots.iter().map(|s| s.ranks).sum();
            if used < self.ranks {
                lines.push(format!(
                    "plan: wave {}: ranks {} idle (explicit rank counts leave them over)",
                    w + 1,
                    rank_span(used, self.ranks - used)
                ));
            }
            if let Some(cut) = &wave.cut {
                lines.push(format!("plan: wave {}: {cut}", w + 1));
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auto(weight: f64) -> Demand {
        Demand {
            weight,
            ranks: None,
        }
    }

    /// (task, first rank, ranks) per wave.
    fn shape(plan: &Plan) -> Vec<Vec<(usize, usize, usize)>> {
        plan.waves
            .iter()
            .map(|w| {
                w.slots
                    .iter()
                    .map(|s| (s.task, s.first_rank, s.ranks))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn priority_is_weight_squared_over_the_sum_ties_in_file_order() {
        let d = [auto(1.0), auto(3.0), auto(1.0), auto(2.0)];
        let (p, sum) = priorities(&d);
        assert_eq!(sum, 7.0);
        for (got, w) in p.iter().zip([1.0, 3.0, 1.0, 2.0]) {
            assert!((got - w * w / 7.0).abs() < 1e-12);
        }
        let plan = plan(&d, &[false; 4], 1).unwrap();
        assert_eq!(plan.order, [1, 3, 0, 2]);
        // One rank: one task per wave, in priority order.
        let starts: Vec<usize> = plan.waves.iter().map(|w| w.slots[0].task).collect();
        assert_eq!(starts, [1, 3, 0, 2]);
    }

    #[test]
    fn a_wave_splits_ranks_by_weight_with_largest_remainders() {
        // 3 : 1 on 4 ranks is 3 and 1.
        let p = plan(&[auto(1.0), auto(3.0)], &[false; 2], 4).unwrap();
        assert_eq!(shape(&p), [vec![(1, 0, 3), (0, 3, 1)]]);
        // 2 : 1 : 1 on 5: quotas 2.5, 1.25, 1.25 -> 2, 1, 1 and the spare
        // rank to the largest remainder (0.5).
        let p = plan(&[auto(2.0), auto(1.0), auto(1.0)], &[false; 3], 5).unwrap();
        assert_eq!(shape(&p), [vec![(0, 0, 3), (1, 3, 1), (2, 4, 1)]]);
        // Equal remainders: the earlier task in the file.
        let p = plan(&[auto(1.0), auto(1.0), auto(1.0)], &[false; 3], 4).unwrap();
        assert_eq!(shape(&p), [vec![(0, 0, 2), (1, 2, 1), (2, 3, 1)]]);
        assert!(p.waves[0].slots[0].why.contains("largest remainder"));
    }

    #[test]
    fn a_task_whose_share_is_under_one_rank_waits_for_the_next_wave() {
        let d = [auto(10.0), auto(1.0), auto(1.0), auto(1.0)];
        let p = plan(&d, &[false; 4], 4).unwrap();
        assert_eq!(
            shape(&p),
            [vec![(0, 0, 4)], vec![(1, 0, 2), (2, 2, 1), (3, 3, 1)]]
        );
        let cut = p.waves[0].cut.as_deref().unwrap();
        assert!(
            cut.starts_with("task 2 waits") && cut.contains("0.36"),
            "{cut}"
        );
        assert_eq!(p.waves[1].cut, None);
    }

    #[test]
    fn explicit_rank_counts_are_kept_and_the_rest_is_shared() {
        let fixed = |r| Demand {
            weight: 1.0,
            ranks: Some(r),
        };
        let d = [fixed(2), auto(1.0), auto(1.0), fixed(3)];
        let p = plan(&d, &[false; 4], 4).unwrap();
        assert_eq!(
            shape(&p),
            [vec![(0, 0, 2), (1, 2, 1), (2, 3, 1)], vec![(3, 0, 3)]]
        );
        let lines = p.describe(|i| format!("task {}", i + 1), &[false; 4]);
        assert!(lines.iter().any(|l| l.contains("wave 2: ranks 3 idle")));
        assert!(p.waves[1].slot_of(3).is_none() && p.waves[1].slot_of(2).is_some());
        let e = plan(&[fixed(5)], &[false], 4).unwrap_err().to_string();
        assert_eq!(e, "task 1 asks for 5 ranks, but the job has 4");
    }

    #[test]
    fn finished_tasks_are_left_out_without_moving_the_others_priorities() {
        let d = [auto(1.0), auto(2.0), auto(1.0)];
        let p = plan(&d, &[false, true, false], 2).unwrap();
        assert_eq!(shape(&p), [vec![(0, 0, 1), (2, 1, 1)]]);
        assert!((p.priorities[0] - 0.25).abs() < 1e-12);
        let lines = p.describe(|i| format!("task {}", i + 1), &[false, true, false]);
        assert!(lines
            .iter()
            .any(|l| l.ends_with("task 2 P 1.0000: skipped, output complete")));
    }
}

//! What one forward step computes, as a pure function of the running sequences and the
//! budgets (vLLM's rule): every sequence has a count of tokens still to compute, which
//! catches up under a per-step token budget. A decoding sequence needs one token; a
//! sequence still reading its prompt gets a chunk of it. That one rule gives continuous
//! batching (sequences join between steps) and chunked prefill (a long prompt never
//! stalls running streams for more than one chunk).

/// One running sequence as the scheduler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqView {
    /// The slot that holds the sequence.
    pub slot: usize,
    /// Prompt tokens not yet in the cache; 0 once the sequence is decoding.
    pub pending: usize,
}

/// Tokens one step may compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// While some sequence is decoding: small, so running streams keep their pace.
    pub busy: usize,
    /// While every sequence is reading its prompt: large, for prompt throughput.
    pub idle: usize,
}

impl Budget {
    /// The most tokens of one sequence a step may compute.
    pub fn most(&self) -> usize {
        self.busy.max(self.idle).max(1)
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget { busy: 128, idle: 512 }
    }
}

/// One sequence's share of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanItem {
    pub slot: usize,
    /// Tokens to compute: 1 for a decoding sequence, a prompt chunk otherwise.
    pub n_tokens: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepPlan {
    pub items: Vec<PlanItem>,
}

impl StepPlan {
    pub fn n_tokens(&self) -> usize {
        self.items.iter().map(|i| i.n_tokens).sum()
    }
}

/// Plan one step. `seqs` are in arrival order. Decoding sequences all advance (one token
/// each); prompt chunks fill what is left of the budget in arrival order. A chunk that does
/// not finish its prompt is cut to a multiple of 4 tokens so the four-token kernels stay
/// full. Every step makes progress: when the budget is spent by decodes alone, no prompt
/// advances, but decodes always do; when nobody decodes, the first prompt always advances.
pub fn plan(seqs: &[SeqView], budget: Budget, out: &mut StepPlan) {
    out.items.clear();
    let n_decode = seqs.iter().filter(|s| s.pending == 0).count();
    out.items.extend(seqs.iter().filter(|s| s.pending == 0).map(|s| PlanItem { slot: s.slot, n_tokens: 1 }));
    let total = if n_decode > 0 { budget.busy } else { budget.idle.max(1) };
    let mut left = total.saturating_sub(n_decode);
    for s in seqs.iter().filter(|s| s.pending > 0) {
        if left == 0 {
            break;
        }
        let n = if s.pending <= left {
            s.pending
        } else if left >= 4 {
            left - left % 4
        } else {
            left
        };
        out.items.push(PlanItem { slot: s.slot, n_tokens: n });
        left -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[SeqView], budget: Budget) -> Vec<(usize, usize)> {
        let mut p = StepPlan::default();
        plan(seqs, budget, &mut p);
        p.items.iter().map(|i| (i.slot, i.n_tokens)).collect()
    }

    const B: Budget = Budget { busy: 16, idle: 64 };

    #[test]
    fn decodes_all_advance_by_one() {
        let seqs: Vec<SeqView> = (0..5).map(|i| SeqView { slot: i, pending: 0 }).collect();
        assert_eq!(run(&seqs, B), vec![(0, 1), (1, 1), (2, 1), (3, 1), (4, 1)]);
    }

    #[test]
    fn lone_prompt_uses_the_idle_budget_in_chunks_of_four() {
        assert_eq!(run(&[SeqView { slot: 3, pending: 200 }], B), vec![(3, 64)]);
        assert_eq!(run(&[SeqView { slot: 3, pending: 30 }], B), vec![(3, 30)]);
    }

    #[test]
    fn prompt_beside_decodes_is_chunked_under_the_busy_budget() {
        let seqs = [SeqView { slot: 0, pending: 0 }, SeqView { slot: 1, pending: 100 }, SeqView { slot: 2, pending: 0 }];
        // 16 - 2 decodes = 14, cut to 12 to keep four-token groups whole.
        assert_eq!(run(&seqs, B), vec![(0, 1), (2, 1), (1, 12)]);
    }

    #[test]
    fn prompts_are_served_in_arrival_order() {
        let seqs = [SeqView { slot: 5, pending: 10 }, SeqView { slot: 1, pending: 100 }, SeqView { slot: 2, pending: 7 }];
        // 64 - 10 = 54 left, cut to 52 for whole groups of four; the last 2 go to the third.
        assert_eq!(run(&seqs, B), vec![(5, 10), (1, 52), (2, 2)]);
    }

    #[test]
    fn decodes_beyond_the_budget_still_advance_and_prompts_wait() {
        let mut seqs: Vec<SeqView> = (0..20).map(|i| SeqView { slot: i, pending: 0 }).collect();
        seqs.push(SeqView { slot: 20, pending: 5 });
        let plan = run(&seqs, B);
        assert_eq!(plan.len(), 20);
        assert!(plan.iter().all(|&(_, n)| n == 1));
    }

    #[test]
    fn a_zero_budget_still_moves_a_prompt() {
        assert_eq!(run(&[SeqView { slot: 0, pending: 9 }], Budget { busy: 0, idle: 0 }), vec![(0, 1)]);
    }

    #[test]
    fn nothing_to_do_is_an_empty_plan() {
        assert!(run(&[], B).is_empty());
    }
}

//! Activation buffers of finished nodes, reused for the next ones.

thread_local! {
    /// Activation buffers of finished layers, reused for the next ones: a
    /// fresh buffer of tens of MB is a fresh mapping from the kernel, and its
    /// page faults cost a third of the seed network's time at batch 256.
    static SPARE: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Buffers kept for reuse per thread: a graph keeps a few values alive at
/// once (a residual beside the branch that rejoins it).
const SPARE_BUFFERS: usize = 8;

pub(crate) fn recycle(buf: Vec<f32>) {
    SPARE.with(|s| {
        let mut s = s.borrow_mut();
        if buf.capacity() > 0 {
            s.push(buf);
            if s.len() > SPARE_BUFFERS {
                // Keep the largest: they fit the most layers.
                s.sort_by_key(|b| std::cmp::Reverse(b.capacity()));
                s.truncate(SPARE_BUFFERS);
            }
        }
    })
}

/// A buffer of `len` values whose contents are stale, not zero: every
/// kernel writes all of its output.
pub(crate) fn spare(len: usize) -> Vec<f32> {
    let mut v = SPARE.with(|s| {
        let mut s = s.borrow_mut();
        let fit = s
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        match fit {
            Some(i) => s.swap_remove(i),
            None => Vec::new(),
        }
    });
    if v.len() >= len {
        v.truncate(len);
    } else {
        v.resize(len, 0.0);
    }
    v
}

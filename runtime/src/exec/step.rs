//! A node ready to run: its op with the weights it needs in memory (the
//! whole weights, or this rank's slices of them).

use crate::graph::Op;
use crate::shards::Shards;
use mpinfer_kernels::cpu::{Conv2d, Gemm, Unary};
use mpinfer_kernels::Tensor;
use std::ops::Range;
use std::sync::Arc;

/// Work fused into the step before it: applied to its output in place, so
/// the value between them is never written out whole.
#[derive(Clone, Debug, PartialEq)]
pub enum Post {
    Unary(Unary),
    /// Adds the step's extra argument `arg` (a residual) elementwise.
    Add(usize),
}

#[derive(Clone, Debug)]
pub enum Step {
    /// Pads resolved; 1-D convolutions run as 2-D with a height of one
    /// (`one_d`).
    Conv {
        conv: Conv2d,
        one_d: bool,
        weight: Arc<Tensor>,
        bias: Option<Arc<Vec<f32>>>,
        post: Vec<Post>,
    },
    /// A constant right operand `[K, N]` (or `[N, K]` with `trans_b`),
    /// applied to the last axis of an input of any rank (Gemm, or MatMul
    /// by a constant matrix); `bias` is `[N]`.
    Linear {
        gemm: Gemm,
        weight: Arc<Tensor>,
        bias: Option<Arc<Tensor>>,
        post: Vec<Post>,
    },
    /// BatchNormalization not folded into a Conv: `x · scale + shift` per
    /// channel.
    Affine {
        scale: Arc<Vec<f32>>,
        shift: Arc<Vec<f32>>,
    },
    /// Any other op, on the node's inputs as they are.
    Node(Op),
    /// Channels `range` of axis 1: a shard of a grouped convolution needs
    /// only its groups' input channels.
    Channels(Range<usize>),
    /// Adds `bias` along `axis` after a reduction, once, then `post`.
    Bias {
        bias: Arc<Vec<f32>>,
        axis: usize,
        post: Vec<Post>,
    },
    /// Zeros shaped like the output at the batch size run: a partial sum
    /// this rank adds nothing to, or, with an empty axis, a split value it
    /// holds none of.
    Zeros(Option<usize>),
    /// A reshape of this rank's share of a split value, to its share
    /// `shards` of the output.
    View { shards: Shards, rank: usize },
}

impl Step {
    /// The fused work of a step that takes it.
    pub fn post_mut(&mut self) -> Option<&mut Vec<Post>> {
        match self {
            Step::Conv { post, .. } | Step::Linear { post, .. } | Step::Bias { post, .. } => {
                Some(post)
            }
            _ => None,
        }
    }

    /// Weight values held, for the memory figures.
    pub fn weight_values(&self) -> usize {
        match self {
            Step::Conv { weight, bias, .. } => weight.len() + bias.as_ref().map_or(0, |b| b.len()),
            Step::Linear { weight, bias, .. } => {
                weight.len() + bias.as_ref().map_or(0, |b| b.len())
            }
            Step::Affine { scale, shift } => scale.len() + shift.len(),
            Step::Bias { bias, .. } => bias.len(),
            _ => 0,
        }
    }
}

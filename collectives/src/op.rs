//! Reduction operators.

use std::fmt;

/// Reduction operators, element by element.
///
/// On integers `Sum` and `Prod` wrap around on overflow, so every algorithm
/// gives exactly the same result whatever order it combines in; `Avg` divides
/// that wrapped sum, rounding toward zero. On floats each combining step
/// rounds in the element type (16-bit types compute each step in f32), and
/// `Min`/`Max` return one of the operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ReduceOp {
    Sum = 1,
    Prod = 2,
    Min = 3,
    Max = 4,
    /// Sum, then divided by the number of ranks where the result lands.
    Avg = 5,
}

impl ReduceOp {
    pub const ALL: [ReduceOp; 5] = [
        ReduceOp::Sum,
        ReduceOp::Prod,
        ReduceOp::Min,
        ReduceOp::Max,
        ReduceOp::Avg,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Prod => "prod",
            ReduceOp::Min => "min",
            ReduceOp::Max => "max",
            ReduceOp::Avg => "avg",
        }
    }
}

impl fmt::Display for ReduceOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ReduceOp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ReduceOp::ALL
            .into_iter()
            .find(|o| o.name() == s)
            .ok_or_else(|| format!("unknown reduce op `{s}` (expected sum, prod, min, max or avg)"))
    }
}

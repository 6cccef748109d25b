//! Run options as the command line spells them.

use clap::{Parser, ValueEnum};
use mpinfer_runtime::run::{CommDType, RankWeights, Schedule, Strategy};

/// The options declared as `mpinfer run` declares them: no parser named, so
/// clap picks each type's own.
#[derive(Debug, Parser)]
struct Cli {
    #[arg(long, default_value = "auto")]
    strategy: Strategy,
    #[arg(long)]
    rank_weights: Option<RankWeights>,
    #[arg(long, default_value = "static")]
    schedule: Schedule,
    #[arg(long, default_value = "f32")]
    comm_dtype: CommDType,
}

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("mpinfer").chain(args.iter().copied()))
}

#[test]
fn every_value_has_its_lower_case_spelling_and_no_other() {
    let strategies = [
        ("data", Strategy::Data),
        ("tensor", Strategy::Tensor),
        ("pipeline", Strategy::Pipeline),
        ("auto", Strategy::Auto),
    ];
    assert_eq!(Strategy::value_variants().len(), strategies.len());
    for (spelling, strategy) in strategies {
        assert_eq!(Strategy::from_str(spelling, false), Ok(strategy));
        assert_eq!(strategy.name(), spelling);
        let upper = spelling.to_uppercase();
        assert!(Strategy::from_str(&upper, false).is_err(), "{upper}");
    }
    let schedules = [("static", Schedule::Static), ("dynamic", Schedule::Dynamic)];
    assert_eq!(Schedule::value_variants().len(), schedules.len());
    for (spelling, schedule) in schedules {
        assert_eq!(Schedule::from_str(spelling, false), Ok(schedule));
    }
    let types = [
        ("f32", CommDType::F32),
        ("bf16", CommDType::BF16),
        ("f16", CommDType::F16),
    ];
    assert_eq!(CommDType::value_variants().len(), types.len());
    for (spelling, dtype) in types {
        assert_eq!(CommDType::from_str(spelling, false), Ok(dtype));
    }
    for wrong in ["", "b-f16", "bf_16", "f8", "fp32"] {
        assert!(CommDType::from_str(wrong, false).is_err(), "{wrong}");
    }
}

#[test]
fn rank_weights_are_numbers_or_auto() {
    assert_eq!("auto".parse(), Ok(RankWeights::Auto));
    assert_eq!(
        "1, 1,2.5".parse(),
        Ok(RankWeights::Listed(vec![1.0, 1.0, 2.5]))
    );
    assert_eq!("0,3".parse(), Ok(RankWeights::Listed(vec![0.0, 3.0])));
    for wrong in ["1,x", "-1,2", "1,inf", "1,,2", "", "Auto"] {
        let e = wrong.parse::<RankWeights>().unwrap_err();
        assert!(e.contains("expected w0,w1,... or auto"), "{wrong}: {e}");
    }
    let e = "0,0".parse::<RankWeights>().unwrap_err();
    assert!(e.contains("must not all be zero"), "{e}");
}

#[test]
fn the_command_line_takes_the_spellings_and_names_the_choices() {
    let cli = parse(&[]).unwrap();
    assert_eq!(
        (cli.strategy, cli.rank_weights, cli.schedule, cli.comm_dtype),
        (Strategy::Auto, None, Schedule::Static, CommDType::F32)
    );
    let cli = parse(&[
        "--strategy",
        "pipeline",
        "--rank-weights",
        "1,2",
        "--schedule",
        "dynamic",
        "--comm-dtype",
        "bf16",
    ])
    .unwrap();
    assert_eq!(
        (cli.strategy, cli.rank_weights, cli.schedule, cli.comm_dtype),
        (
            Strategy::Pipeline,
            Some(RankWeights::Listed(vec![1.0, 2.0])),
            Schedule::Dynamic,
            CommDType::BF16
        )
    );
    let e = parse(&["--strategy", "layers"]).unwrap_err().to_string();
    assert!(e.contains("'layers'"), "{e}");
    assert!(e.contains("data, tensor, pipeline, auto"), "{e}");
    let e = parse(&["--comm-dtype", "f8"]).unwrap_err().to_string();
    assert!(e.contains("f32, bf16, f16"), "{e}");
    let e = parse(&["--rank-weights", "1,x"]).unwrap_err().to_string();
    assert!(e.contains("rank weight \"x\""), "{e}");
}

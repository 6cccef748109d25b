//! The task file: `[[task]]` tables, each one `mpinfer run` written as
//! TOML keys, plus how much of the job it should get.
//!
//! Every key but `ranks` and `weight` is a `run` option under its long
//! name, handed to the run command's own parser, so any option `run` takes
//! works in a task and is checked the same way. Paths are relative to the
//! task file.

use crate::run;
use clap::{CommandFactory, Parser};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// One task of the file.
#[derive(Debug)]
pub struct Task {
    /// 1-based position in the file: how the task is named.
    pub number: usize,
    pub args: run::Args,
    pub weight: f64,
    /// An explicit rank count; `None` for "auto".
    pub ranks: Option<usize>,
}

impl Task {
    pub fn name(&self) -> String {
        format!("task {} ({})", self.number, self.args.output.display())
    }
}

#[derive(Debug, Error)]
pub enum TaskFileError {
    #[error("cannot read the task file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: no [[task]] tables: nothing to run")]
    Empty { path: PathBuf },
    #[error("{path}: unknown top-level key {key:?} (a task file holds [[task]] tables only)")]
    TopLevel { path: PathBuf, key: String },
    #[error("{path}: `task` must be an array of tables: write each task as [[task]]")]
    NotTables { path: PathBuf },
    #[error("{path}: task {number}: {message}")]
    Task {
        path: PathBuf,
        number: usize,
        message: String,
    },
}

/// The run option a task key passes through, wrapped for clap.
#[derive(Parser)]
#[command(name = "task", no_binary_name = true)]
struct TaskArgs {
    #[command(flatten)]
    args: run::Args,
}

/// Keys of a task that are not run options.
const OWN_KEYS: [&str; 2] = ["ranks", "weight"];
/// Run options a batch sets for every task itself.
const BATCH_KEYS: [&str; 1] = ["resume"];
const REQUIRED: [&str; 3] = ["model", "input", "output"];

pub fn read(path: &Path) -> Result<Vec<Task>, TaskFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TaskFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// The tasks of `text`, the file at `path`.
pub fn parse(text: &str, path: &Path) -> Result<Vec<Task>, TaskFileError> {
    let path_buf = || path.to_path_buf();
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| TaskFileError::Parse {
            path: path_buf(),
            message: e.to_string().trim_end().replace('\n', " | "),
        })?;
    if let Some(key) = table.keys().find(|k| *k != "task") {
        return Err(TaskFileError::TopLevel {
            path: path_buf(),
            key: key.clone(),
        });
    }
    let Some(list) = table.get("task") else {
        return Err(TaskFileError::Empty { path: path_buf() });
    };
    let Some(list) = list.as_array().filter(|a| a.iter().all(|t| t.is_table())) else {
        return Err(TaskFileError::NotTables { path: path_buf() });
    };
    if list.is_empty() {
        return Err(TaskFileError::Empty { path: path_buf() });
    }
    let base = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            let t = t.as_table().expect("checked to be tables");
            task(t, i + 1, base).map_err(|message| TaskFileError::Task {
                path: path_buf(),
                number: i + 1,
                message,
            })
        })
        .collect()
}

fn task(t: &toml::Table, number: usize, base: &Path) -> Result<Task, String> {
    if let Some(key) = REQUIRED.iter().find(|k| !t.contains_key(**k)) {
        return Err(format!("missing key {key:?}"));
    }
    let command = TaskArgs::command();
    let mut argv = Vec::new();
    for (key, value) in t.iter().filter(|(k, _)| !OWN_KEYS.contains(&k.as_str())) {
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()))
            .filter(|_| !BATCH_KEYS.contains(&key.as_str()));
        let Some(arg) = arg else {
            let why = if BATCH_KEYS.contains(&key.as_str()) {
                format!("key {key:?} is set for every task by `mpinfer batch --{key}`")
            } else {
                format!("unknown key {key:?}: a task takes ranks, weight and the options of `mpinfer run` under their long names")
            };
            return Err(why);
        };
        let takes_value = arg.get_action().takes_values();
        argv.extend(option(key, value, takes_value)?);
    }
    let mut args = TaskArgs::try_parse_from(&argv)
        .map_err(|e| clap_message(&e))?
        .args;
    args.resolve_paths(base);
    Ok(Task {
        number,
        args,
        weight: weight(t.get("weight"))?,
        ranks: ranks(t.get("ranks"))?,
    })
}

/// `--key=value` as the command line would have it; a flag only when true.
fn option(key: &str, value: &toml::Value, takes_value: bool) -> Result<Vec<String>, String> {
    use toml::Value;
    let text = |v: &Value| -> Result<String, String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Integer(i) => Ok(i.to_string()),
            Value::Float(x) => Ok(x.to_string()),
            Value::Boolean(b) => Ok(b.to_string()),
            _ => Err(format!(
                "key {key:?}: a {} cannot be an option's value",
                v.type_str()
            )),
        }
    };
    match (value, takes_value) {
        (Value::Boolean(true), false) => Ok(vec![format!("--{key}")]),
        (Value::Boolean(false), false) => Ok(Vec::new()),
        (_, false) => Err(format!("key {key:?} is a switch: write {key} = true")),
        (Value::Array(items), true) => {
            let parts = items.iter().map(text).collect::<Result<Vec<_>, _>>()?;
            Ok(vec![format!("--{key}={}", parts.join(","))])
        }
        (v, true) => Ok(vec![format!("--{key}={}", text(v)?)]),
    }
}

/// clap's complaint on one line, without its usage text.
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or("invalid options").trim();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

fn weight(v: Option<&toml::Value>) -> Result<f64, String> {
    let w = match v {
        None => return Ok(1.0),
        Some(toml::Value::Integer(i)) => *i as f64,
        Some(toml::Value::Float(x)) => *x,
        Some(other) => return Err(format!("weight {other}: expected a positive number")),
    };
    if !(w > 0.0 && w.is_finite()) {
        return Err(format!("weight {w}: expected a positive number"));
    }
    Ok(w)
}

fn ranks(v: Option<&toml::Value>) -> Result<Option<usize>, String> {
    match v {
        None => Ok(None),
        Some(toml::Value::String(s)) if s == "auto" => Ok(None),
        Some(toml::Value::Integer(n)) if *n >= 1 => Ok(Some(*n as usize)),
        Some(other) => Err(format!(
            "ranks {other}: expected a count of at least 1, or \"auto\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tasks(text: &str) -> Result<Vec<Task>, String> {
        parse(text, Path::new("/jobs/tasks.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn keys_become_run_options_with_paths_beside_the_task_file() {
        let t = tasks(
            r#"
            [[task]]
            model = "m.onnx"
            input = "/data/x.npy"
            output = "out/y.npy"
            batch-size = 16
            mean = [-0.5, 0.25]
            dtype = "bf16"
            weight = 2.5
            ranks = 3

            [[task]]
            model = "n.onnx"
            input = "x.npy"
            output = "z.npy"
            ranks = "auto"
            "#,
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        let a = &t[0].args;
        assert_eq!(a.model, Path::new("/jobs/m.onnx"));
        assert_eq!(a.input, Path::new("/data/x.npy"));
        assert_eq!(a.output, Path::new("/jobs/out/y.npy"));
        assert_eq!(
            format!("{:?}", a).matches("batch_size: Some(16)").count(),
            1
        );
        assert!(format!("{:?}", a).contains("mean: Some([-0.5, 0.25])"));
        assert_eq!((t[0].weight, t[0].ranks), (2.5, Some(3)));
        assert_eq!((t[1].weight, t[1].ranks, t[1].number), (1.0, None, 2));
        assert_eq!(t[1].name(), "task 2 (/jobs/z.npy)");
    }

    #[test]
    fn mistakes_name_the_task_and_key() {
        let one = |extra: &str| {
            tasks(&format!(
                "[[task]]\nmodel = \"m\"\ninput = \"x\"\noutput = \"y\"\n{extra}\n"
            ))
            .err()
            .unwrap_or_default()
        };
        let e = one("batch_size = 4");
        assert!(e.contains("task 1: unknown key \"batch_size\""), "{e}");
        let e = one("batch-size = \"many\"");
        assert!(e.contains("task 1:") && e.contains("many"), "{e}");
        let e = one("resume = true");
        assert!(e.contains("batch --resume"), "{e}");
        let e = one("weight = 0");
        assert!(e.contains("task 1: weight 0"), "{e}");
        let e = one("ranks = 0");
        assert!(e.contains("task 1: ranks 0"), "{e}");
        let e = one("strategy = \"sideways\"");
        assert!(e.contains("sideways"), "{e}");
        let e = tasks("[[task]]\nmodel = \"m\"\ninput = \"x\"\n").unwrap_err();
        assert!(e.contains("task 1: missing key \"output\""), "{e}");
    }

    #[test]
    fn files_without_tasks_or_not_toml_are_refused() {
        let e = tasks("").unwrap_err();
        assert!(e.contains("no [[task]] tables"), "{e}");
        let e = tasks("task = []").unwrap_err();
        assert!(e.contains("no [[task]] tables"), "{e}");
        let e = tasks("[[task]\nmodel = 1").unwrap_err();
        assert!(
            e.starts_with("/jobs/tasks.toml: TOML parse error at line 1"),
            "{e}"
        );
        let e = tasks("jobs = 3").unwrap_err();
        assert!(e.contains("unknown top-level key \"jobs\""), "{e}");
        let e = tasks("task = 3").unwrap_err();
        assert!(e.contains("array of tables"), "{e}");
    }
}

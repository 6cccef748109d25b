//! `.npy` reading and writing, checked against files NumPy writes and reads.

use mpinfer_runtime::npy::{read_labels, write_f32, NpyDType, NpyFile, NpyWriter};
use mpinfer_runtime::ModelError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `code` in the repository's venv with `d` bound to the directory.
fn numpy(dir: &Path, code: &str) {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let script = format!(
        "import numpy as np\nd = {:?}\n{code}",
        dir.display().to_string()
    );
    let out = Command::new(&python)
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; run scripts/setup.sh to create the venv with numpy",
                python.display()
            )
        });
    assert!(
        out.status.success(),
        "python failed (run scripts/setup.sh if numpy is missing):\n{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn values(n: usize) -> Vec<f32> {
    // Quarters: exact in float16 too.
    (0..n).map(|i| i as f32 * 0.25 - 2.0).collect()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn format_message(e: ModelError, want_path: &Path) -> String {
    match e {
        ModelError::Format { path, message } => {
            assert_eq!(path, want_path);
            message
        }
        e => panic!("not a format error: {e:?}"),
    }
}

#[test]
fn round_trip_whole_and_by_rows() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.npy");
    write_f32(&p, &[5, 2, 3], &values(30)).unwrap();
    let f = NpyFile::open(&p).unwrap();
    assert_eq!(
        (f.shape(), f.dtype(), f.rows()),
        (&[5, 2, 3][..], NpyDType::F32, 5)
    );
    let all = f.read_all().unwrap();
    assert_eq!((all.shape, all.data), (vec![5, 2, 3], values(30)));
    let rows = f.read_rows(1..4).unwrap();
    assert_eq!(rows.shape, [3, 2, 3]);
    assert_eq!(rows.data, values(30)[6..24]);
    assert_eq!(f.read_rows(5..5).unwrap().shape, [0, 2, 3]);
    assert!(matches!(
        f.read_rows(4..6),
        Err(ModelError::RowsOutside { rows, available: 5, .. }) if rows == (4..6)
    ));
    assert_eq!(files_in(dir.path()), ["a.npy"]);
}

#[test]
fn numpy_reads_what_is_written() {
    let dir = tempfile::tempdir().unwrap();
    write_f32(&dir.path().join("m.npy"), &[3, 4], &values(12)).unwrap();
    write_f32(&dir.path().join("v.npy"), &[7], &values(7)).unwrap();
    write_f32(&dir.path().join("s.npy"), &[], &[1.5]).unwrap();
    numpy(
        dir.path(),
        "a = np.load(d + '/m.npy')\n\
         assert a.dtype == np.float32 and a.shape == (3, 4), a\n\
         assert (a == np.arange(12, dtype=np.float32).reshape(3, 4) * 0.25 - 2).all()\n\
         v = np.load(d + '/v.npy'); assert v.shape == (7,) and v[6] == -0.5, v\n\
         s = np.load(d + '/s.npy'); assert s.shape == () and s == 1.5, s",
    );
}

#[test]
fn numpy_files_in_other_float_types_and_versions() {
    let dir = tempfile::tempdir().unwrap();
    numpy(
        dir.path(),
        "a = np.arange(12).reshape(4, 3) * 0.25 - 2\n\
         np.save(d + '/f16.npy', a.astype(np.float16))\n\
         np.save(d + '/f64.npy', a.astype(np.float64))\n\
         for v in (1, 2, 3):\n\
         \x20   with open(d + f'/v{v}.npy', 'wb') as f:\n\
         \x20       np.lib.format.write_array(f, a.astype(np.float32), version=(v, 0))",
    );
    for (name, dtype) in [
        ("f16", NpyDType::F16),
        ("f64", NpyDType::F64),
        ("v1", NpyDType::F32),
        ("v2", NpyDType::F32),
        ("v3", NpyDType::F32),
    ] {
        let f = NpyFile::open(&dir.path().join(format!("{name}.npy"))).unwrap();
        assert_eq!((f.shape(), f.dtype()), (&[4, 3][..], dtype), "{name}");
        assert_eq!(f.read_all().unwrap().data, values(12), "{name}");
        assert_eq!(f.read_rows(2..3).unwrap().data, values(12)[6..9], "{name}");
    }
}

#[test]
fn non_float_inputs_are_refused_naming_file_and_dtype() {
    let dir = tempfile::tempdir().unwrap();
    numpy(
        dir.path(),
        "np.save(d + '/u8.npy', np.arange(6, dtype=np.uint8))\n\
         np.save(d + '/i64.npy', np.arange(6, dtype=np.int64))\n\
         np.save(d + '/big.npy', np.arange(6, dtype='>f4'))\n\
         np.save(d + '/fortran.npy', np.asfortranarray(np.ones((2, 3), np.float32)))",
    );
    for (name, descr) in [("u8", "'|u1'"), ("i64", "'<i8'"), ("big", "'>f4'")] {
        let p = dir.path().join(format!("{name}.npy"));
        let m = format_message(NpyFile::open(&p).unwrap_err(), &p);
        assert!(m.contains(descr) && m.contains("float32"), "{name}: {m}");
    }
    let p = dir.path().join("fortran.npy");
    let m = format_message(NpyFile::open(&p).unwrap_err(), &p);
    assert!(m.contains("fortran_order"), "{m}");
}

#[test]
fn labels_of_any_integer_type() {
    let dir = tempfile::tempdir().unwrap();
    numpy(
        dir.path(),
        "l = np.array([3, 0, 9, 1, 200])\n\
         for t in ('i8', 'i4', 'i2', 'u1', 'u2', 'u8'):\n\
         \x20   np.save(d + f'/{t}.npy', l.astype(t))\n\
         np.save(d + '/col.npy', l.reshape(5, 1).astype(np.int32))\n\
         np.save(d + '/neg.npy', np.array([-1, -128, 127], np.int8))\n\
         np.save(d + '/huge.npy', np.array([2**63], np.uint64))\n\
         np.save(d + '/float.npy', l.astype(np.float32))\n\
         np.save(d + '/matrix.npy', np.zeros((2, 2), np.int64))",
    );
    for t in ["i8", "i4", "i2", "u1", "u2", "u8", "col"] {
        let got = read_labels(&dir.path().join(format!("{t}.npy"))).unwrap();
        assert_eq!(got, [3, 0, 9, 1, 200], "{t}");
    }
    assert_eq!(
        read_labels(&dir.path().join("neg.npy")).unwrap(),
        [-1, -128, 127]
    );
    for (name, needle) in [
        ("huge", "does not fit"),
        (
            "float",
            "'<f4' is not supported: labels need an integer type",
        ),
        ("matrix", "[N] or [N, 1]"),
    ] {
        let p = dir.path().join(format!("{name}.npy"));
        let m = format_message(read_labels(&p).unwrap_err(), &p);
        assert!(m.contains(needle), "{name}: {m}");
    }
}

#[test]
fn truncated_and_oversized_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.npy");
    write_f32(&p, &[4, 4], &values(16)).unwrap();
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len - 4)
        .unwrap();
    let m = format_message(NpyFile::open(&p).unwrap_err(), &p);
    assert!(
        m.contains("64 bytes of data") && m.contains("60 bytes follow"),
        "{m}"
    );

    // A header claiming far more data than there is: refused from the sizes
    // alone, nothing is allocated for it.
    let original = std::fs::read(&p).unwrap();
    let header_len = u16::from_le_bytes([original[8], original[9]]) as usize;
    let header = String::from_utf8_lossy(&original[10..10 + header_len]).into_owned();
    let with_shape = |shape: &str| {
        let text = header.trim_end().replace("(4, 4)", shape);
        let mut bytes = original[..10].to_vec();
        bytes.extend(format!("{text:<w$}\n", w = header_len - 1).bytes());
        bytes.extend(&original[10 + header_len..]);
        bytes
    };
    for (shape, needle) in [
        ("(1000000, 1000000)", "4000000000000 bytes of data"),
        ("(4000000000, 4000000000)", "more than 2^64"),
    ] {
        let big = dir.path().join("big.npy");
        std::fs::write(&big, with_shape(shape)).unwrap();
        let m = format_message(NpyFile::open(&big).unwrap_err(), &big);
        assert!(m.contains(needle), "{m}");
    }
    let bytes = with_shape("(4, 4)");

    // Cut inside the header itself.
    let cut = dir.path().join("cut.npy");
    std::fs::write(&cut, &bytes[..40]).unwrap();
    let m = format_message(NpyFile::open(&cut).unwrap_err(), &cut);
    assert!(m.contains("truncated"), "{m}");

    let junk = dir.path().join("junk.npy");
    std::fs::write(&junk, b"not numpy at all").unwrap();
    let m = format_message(NpyFile::open(&junk).unwrap_err(), &junk);
    assert!(m.contains("magic"), "{m}");
}

#[test]
fn writer_publishes_only_on_finish() {
    let dir = tempfile::tempdir().unwrap();
    let p: PathBuf = dir.path().join("out.npy");
    let mut w = NpyWriter::create(&p, &[4, 3]).unwrap();
    w.write_rows(&values(6)).unwrap();
    // Mid-way: only a hidden temporary file.
    assert!(!p.exists());
    let names = files_in(dir.path());
    assert_eq!(names.len(), 1);
    assert!(
        names[0].starts_with(".out.npy.") && names[0].ends_with(".tmp"),
        "{names:?}"
    );
    // Not whole rows, and past the declared shape: refused, nothing written.
    assert!(matches!(
        w.write_rows(&values(2)),
        Err(ModelError::NotWholeRows {
            values: 2,
            row_len: 3,
            ..
        })
    ));
    assert!(matches!(
        w.write_rows(&values(9)),
        Err(ModelError::PastDeclared {
            values: 9,
            declared: 12,
            ..
        })
    ));
    w.write_rows(&values(12)[6..]).unwrap();
    assert_eq!(w.written(), 12);
    w.finish().unwrap();
    assert_eq!(files_in(dir.path()), ["out.npy"]);
    assert_eq!(
        NpyFile::open(&p).unwrap().read_all().unwrap().data,
        values(12)
    );
}

#[test]
fn abandoned_or_short_writes_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("out.npy");
    {
        let mut w = NpyWriter::create(&p, &[2, 2]).unwrap();
        w.write_rows(&values(2)).unwrap();
    }
    assert_eq!(files_in(dir.path()), Vec::<String>::new());

    let mut w = NpyWriter::create(&p, &[2, 2]).unwrap();
    w.write_rows(&values(2)).unwrap();
    assert!(matches!(
        w.finish(),
        Err(ModelError::ShortWrite {
            written: 2,
            declared: 4,
            ..
        })
    ));
    assert_eq!(files_in(dir.path()), Vec::<String>::new());

    // An existing file is replaced whole.
    write_f32(&p, &[1], &[7.0]).unwrap();
    write_f32(&p, &[2], &[1.0, 2.0]).unwrap();
    assert_eq!(
        NpyFile::open(&p).unwrap().read_all().unwrap().data,
        [1.0, 2.0]
    );
    assert!(write_f32(&p, &[3], &[1.0]).is_err());
    assert_eq!(files_in(dir.path()), ["out.npy"]);
}

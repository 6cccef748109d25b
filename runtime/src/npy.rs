//! NumPy `.npy` files: inputs read a range of rows at a time, outputs written
//! as they arrive and published by an atomic rename.
//!
//! Inputs are float32 (`<f4`); float16 and float64 files are converted on
//! read, and [`NpyFile::dtype`] tells the caller so it can say so. Labels are
//! read from any integer type by [`read_labels`].

use crate::error::ModelError;
use mpinfer_kernels::Tensor;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Element type of a float `.npy` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NpyDType {
    F32,
    F16,
    F64,
}

impl NpyDType {
    pub fn descr(self) -> &'static str {
        match self {
            NpyDType::F32 => "<f4",
            NpyDType::F16 => "<f2",
            NpyDType::F64 => "<f8",
        }
    }

    pub fn size(self) -> usize {
        match self {
            NpyDType::F32 => 4,
            NpyDType::F16 => 2,
            NpyDType::F64 => 8,
        }
    }
}

/// An open `.npy` file of floats whose header has been checked against its
/// size; values are read on demand.
#[derive(Debug)]
pub struct NpyFile {
    path: PathBuf,
    file: File,
    shape: Vec<usize>,
    dtype: NpyDType,
    data_offset: u64,
}

impl NpyFile {
    pub fn open(path: &Path) -> Result<NpyFile, ModelError> {
        let (file, header) = open_checked(
            path,
            |d| match d {
                "<f4" => Some(4),
                "<f2" => Some(2),
                "<f8" => Some(8),
                _ => None,
            },
            "float32 ('<f4') is expected (float16 and float64 are converted)",
        )?;
        let dtype = match header.descr.as_str() {
            "<f4" => NpyDType::F32,
            "<f2" => NpyDType::F16,
            _ => NpyDType::F64,
        };
        Ok(NpyFile {
            path: path.to_path_buf(),
            file,
            shape: header.shape,
            dtype,
            data_offset: header.data_offset,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> NpyDType {
        self.dtype
    }

    /// Length of axis 0 (1 for a scalar).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// Rows `rows` along axis 0, as f32. Reads only their bytes.
    pub fn read_rows(&self, rows: Range<usize>) -> Result<Tensor, ModelError> {
        if self.shape.is_empty() {
            return Err(format_err(
                &self.path,
                "holds a scalar, which has no rows".into(),
            ));
        }
        if rows.start > rows.end || rows.end > self.shape[0] {
            return Err(ModelError::RowsOutside {
                path: self.path.clone(),
                rows,
                available: self.shape[0],
            });
        }
        let mut shape = self.shape.clone();
        shape[0] = rows.len();
        let count = rows.len() * self.row_len();
        let at = (rows.start * self.row_len() * self.dtype.size()) as u64;
        Ok(Tensor::new(shape, self.read_values(at, count)?))
    }

    pub fn read_all(&self) -> Result<Tensor, ModelError> {
        let count = self.shape.iter().product();
        Ok(Tensor::new(self.shape.clone(), self.read_values(0, count)?))
    }

    /// `count` values from byte `at` of the data, widened or narrowed to f32.
    fn read_values(&self, at: u64, count: usize) -> Result<Vec<f32>, ModelError> {
        let mut bytes = vec![0u8; count * self.dtype.size()];
        self.file
            .read_exact_at(&mut bytes, self.data_offset + at)
            .map_err(|e| io_err(&self.path, e))?;
        Ok(match self.dtype {
            NpyDType::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            NpyDType::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            NpyDType::F64 => bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                .collect(),
        })
    }
}

/// Class labels: a 1-D (or `[N, 1]`) array of any integer type.
pub fn read_labels(path: &Path) -> Result<Vec<i64>, ModelError> {
    let (file, header) = open_checked(path, integer_size, "labels need an integer type")?;
    let size = integer_size(&header.descr).expect("checked on open");
    let signed = header.descr.as_bytes()[1] == b'i';
    if !(header.shape.len() == 1 || header.shape.len() == 2 && header.shape[1] == 1) {
        return Err(format_err(
            path,
            format!(
                "labels have shape {:?}; [N] or [N, 1] is expected",
                header.shape
            ),
        ));
    }
    let count: usize = header.shape.iter().product();
    let mut bytes = vec![0u8; count * size];
    file.read_exact_at(&mut bytes, header.data_offset)
        .map_err(|e| io_err(path, e))?;
    let mut out = Vec::with_capacity(count);
    for b in bytes.chunks_exact(size) {
        let mut wide = [0u8; 8];
        wide[..size].copy_from_slice(b);
        let negative = signed && b[size - 1] & 0x80 != 0;
        if negative {
            wide[size..].fill(0xff);
        }
        let v = i64::from_le_bytes(wide);
        if !signed && v < 0 {
            return Err(format_err(
                path,
                format!(
                    "label {} does not fit in 64-bit signed",
                    u64::from_le_bytes(wide)
                ),
            ));
        }
        out.push(v);
    }
    Ok(out)
}

/// Element size of a little-endian (or byte-order free) integer dtype.
fn integer_size(descr: &str) -> Option<usize> {
    match descr.as_bytes() {
        [b'|', b'i' | b'u', b'1'] => Some(1),
        [b'<', b'i' | b'u', d @ (b'2' | b'4' | b'8')] => Some((d - b'0') as usize),
        _ => None,
    }
}

/// Writes a float32 array. The file appears complete or not at all: it is
/// written under a temporary name in the same directory, then renamed.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), ModelError> {
    let mut w = NpyWriter::create(path, shape)?;
    w.write_rows(data)?;
    w.finish()
}

/// Writes a float32 array row by row, so that results can be stored as they
/// come. Nothing appears at the path until [`finish`](NpyWriter::finish);
/// dropped before that, the temporary file is removed.
#[derive(Debug)]
pub struct NpyWriter {
    path: PathBuf,
    temp: PathBuf,
    out: Option<BufWriter<File>>,
    row_len: usize,
    total: usize,
    written: usize,
}

impl NpyWriter {
    pub fn create(path: &Path, shape: &[usize]) -> Result<NpyWriter, ModelError> {
        let total = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(4).map(|_| n))
            .ok_or_else(|| ModelError::ShapeTooLarge {
                path: path.to_path_buf(),
                shape: shape.to_vec(),
            })?;
        let temp = temp_path(path);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| io_err(path, e))?;
        let mut w = NpyWriter {
            path: path.to_path_buf(),
            temp,
            out: Some(BufWriter::with_capacity(1 << 16, file)),
            row_len: shape.iter().skip(1).product(),
            total,
            written: 0,
        };
        let header = header_bytes(NpyDType::F32, shape);
        w.writer().write_all(&header).map_err(|e| io_err(path, e))?;
        Ok(w)
    }

    fn writer(&mut self) -> &mut BufWriter<File> {
        self.out
            .as_mut()
            .expect("open until finish, which takes the writer by value")
    }

    /// Values written so far.
    pub fn written(&self) -> usize {
        self.written
    }

    /// Appends whole rows (a multiple of the row length) of values.
    pub fn write_rows(&mut self, values: &[f32]) -> Result<(), ModelError> {
        if self.row_len > 0 && !values.len().is_multiple_of(self.row_len) {
            return Err(ModelError::NotWholeRows {
                path: self.path.clone(),
                values: values.len(),
                row_len: self.row_len,
            });
        }
        if self.written + values.len() > self.total {
            return Err(ModelError::PastDeclared {
                path: self.path.clone(),
                values: values.len(),
                declared: self.total,
            });
        }
        let path = self.path.clone();
        let out = self.writer();
        let mut buf = Vec::with_capacity(values.len().min(1 << 14) * 4);
        for chunk in values.chunks(1 << 14) {
            buf.clear();
            buf.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
            out.write_all(&buf).map_err(|e| io_err(&path, e))?;
        }
        self.written += values.len();
        Ok(())
    }

    /// Checks that every value was written, syncs, and renames the file into
    /// place.
    pub fn finish(mut self) -> Result<(), ModelError> {
        if self.written != self.total {
            return Err(ModelError::ShortWrite {
                path: self.path.clone(),
                written: self.written,
                declared: self.total,
            });
        }
        let out = self.out.take().expect("not finished before");
        let file = out
            .into_inner()
            .map_err(|e| io_err(&self.path, e.into_error()))?;
        // Synced before the rename, so that after a crash the path holds
        // either nothing or every byte.
        file.sync_all().map_err(|e| io_err(&self.path, e))?;
        drop(file);
        std::fs::rename(&self.temp, &self.path).map_err(|e| io_err(&self.path, e))?;
        Ok(())
    }
}

impl Drop for NpyWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// A fresh name beside `path`, hidden, unique to this process and call.
fn temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out.npy".into());
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Magic, version, header length and the header dict, padded with spaces so
/// that the data starts on a 64-byte boundary as NumPy writes it.
pub fn header_bytes(dtype: NpyDType, shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {dims}, }}",
        dtype.descr()
    );
    let padded = |prefix: usize| (prefix + dict.len() + 1).next_multiple_of(64) - prefix;
    let v1 = padded(10) <= u16::MAX as usize;
    let prefix = if v1 { 10 } else { 12 };
    let pad = padded(prefix) - dict.len() - 1;
    dict.extend(std::iter::repeat_n(' ', pad));
    dict.push('\n');
    let mut out = Vec::with_capacity(prefix + dict.len());
    out.extend_from_slice(MAGIC);
    if v1 {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(dict.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out
}

struct Header {
    descr: String,
    shape: Vec<usize>,
    data_offset: u64,
}

/// Opens `path` and checks its header, including that the data it declares
/// is exactly what follows it in the file.
fn open_checked(
    path: &Path,
    element_size: fn(&str) -> Option<usize>,
    expected: &str,
) -> Result<(File, Header), ModelError> {
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let (prefix, header_len) = read_preamble(&file, path, len)?;
    let text = read_header_text(&file, path, len, prefix, header_len)?;
    let (descr, shape) = header_entries(path, &text)?;
    let size = element_size(&descr).ok_or_else(|| {
        format_err(
            path,
            format!("dtype '{descr}' is not supported: {expected}"),
        )
    })? as u64;
    let data_offset = prefix + header_len;
    check_data_size(path, &shape, &descr, size, len - data_offset)?;
    check_row_width(path, &shape, size)?;
    let shape = shape
        .into_iter()
        .map(|d| usize::try_from(d).map_err(|_| format_err(path, "shape too large".into())))
        .collect::<Result<_, _>>()?;
    Ok((
        file,
        Header {
            descr,
            shape,
            data_offset,
        },
    ))
}

/// The magic and version: where the header text starts and how long it is.
fn read_preamble(file: &File, path: &Path, len: u64) -> Result<(u64, u64), ModelError> {
    let mut head = [0u8; 12];
    let got = (len as usize).min(12);
    file.read_exact_at(&mut head[..got], 0)
        .map_err(|e| io_err(path, e))?;
    if got < 10 || &head[..6] != MAGIC {
        return Err(format_err(path, "not a .npy file (no NumPy magic)".into()));
    }
    match head[6] {
        1 => Ok((10u64, u16::from_le_bytes([head[8], head[9]]) as u64)),
        2 | 3 if got == 12 => Ok((
            12u64,
            u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as u64,
        )),
        v => Err(format_err(
            path,
            format!("unsupported .npy version {v} (1, 2 and 3 are read)"),
        )),
    }
}

fn read_header_text(
    file: &File,
    path: &Path,
    len: u64,
    prefix: u64,
    header_len: u64,
) -> Result<String, ModelError> {
    if prefix + header_len > len {
        return Err(format_err(
            path,
            format!("truncated: the header needs {header_len} bytes, the file has {len}"),
        ));
    }
    let mut text = vec![0u8; header_len as usize];
    file.read_exact_at(&mut text, prefix)
        .map_err(|e| io_err(path, e))?;
    String::from_utf8(text).map_err(|_| format_err(path, "the header is not text".into()))
}

/// The dtype and shape the header names, refusing unknown entries and
/// Fortran order, which the row reads here do not handle.
fn header_entries(path: &Path, text: &str) -> Result<(String, Vec<u64>), ModelError> {
    let dict =
        parse_dict(text).map_err(|m| format_err(path, format!("bad header {text:?}: {m}")))?;
    let mut descr = None;
    let mut fortran = None;
    let mut shape = None;
    for (key, value) in dict {
        match (key.as_str(), value) {
            ("descr", Value::Str(s)) => descr = Some(s),
            ("fortran_order", Value::Bool(b)) => fortran = Some(b),
            ("shape", Value::Tuple(t)) => shape = Some(t),
            (k, _) => {
                return Err(format_err(
                    path,
                    format!("unexpected header entry '{k}' in {text:?}"),
                ))
            }
        }
    }
    let (Some(descr), Some(fortran), Some(shape)) = (descr, fortran, shape) else {
        return Err(format_err(
            path,
            format!("header {text:?} lacks descr, fortran_order or shape"),
        ));
    };
    if fortran {
        return Err(format_err(
            path,
            "fortran_order is True; C order is expected (save with np.ascontiguousarray)".into(),
        ));
    }
    Ok((descr, shape))
}

/// A file cut short or with bytes appended would otherwise be read as if
/// whole.
fn check_data_size(
    path: &Path,
    shape: &[u64],
    descr: &str,
    size: u64,
    follows: u64,
) -> Result<(), ModelError> {
    let data = shape.iter().try_fold(size, |a, &d| a.checked_mul(d));
    if data != Some(follows) {
        return Err(format_err(
            path,
            format!(
                "the header declares shape {shape:?} of '{descr}' ({} bytes of data) but {} \
                 bytes follow it",
                data.map_or("more than 2^64".to_string(), |d| d.to_string()),
                follows
            ),
        ));
    }
    Ok(())
}

/// An empty array passes the size check whatever its other dimensions:
/// cap its row width (zeros taken as ones) so sizing rows cannot overflow.
fn check_row_width(path: &Path, shape: &[u64], size: u64) -> Result<(), ModelError> {
    let row = shape
        .iter()
        .skip(1)
        .try_fold(size, |a, &d| a.checked_mul(d.max(1)));
    if row.is_none_or(|r| r > 1 << 40) {
        return Err(format_err(
            path,
            format!("the header declares shape {shape:?}: rows of more than 2^40 bytes"),
        ));
    }
    Ok(())
}

enum Value {
    Str(String),
    Bool(bool),
    Tuple(Vec<u64>),
}

/// Parses the Python dict literal of a `.npy` header: string keys, and
/// string, boolean or integer-tuple values.
fn parse_dict(text: &str) -> Result<Vec<(String, Value)>, String> {
    let mut p = Parser {
        s: text.trim_end().as_bytes(),
        i: 0,
    };
    p.expect(b'{')?;
    let mut out = Vec::new();
    loop {
        p.ws();
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.ws();
        p.expect(b':')?;
        p.ws();
        let value = match p.peek() {
            Some(b'\'' | b'"') => Value::Str(p.string()?),
            Some(b'(') => Value::Tuple(p.tuple()?),
            _ if p.word("True") => Value::Bool(true),
            _ if p.word("False") => Value::Bool(false),
            _ => return Err(format!("unexpected value for '{key}'")),
        };
        out.push((key, value));
        p.ws();
        if !p.eat(b',') {
            p.ws();
            p.expect(b'}')?;
            break;
        }
    }
    p.ws();
    if p.i != p.s.len() {
        return Err("text after the dict".into());
    }
    Ok(out)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        self.i += hit as usize;
        hit
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected '{}' at byte {}", c as char, self.i))
        }
    }

    fn word(&mut self, w: &str) -> bool {
        let hit = self.s[self.i..].starts_with(w.as_bytes());
        if hit {
            self.i += w.len();
        }
        hit
    }

    fn string(&mut self) -> Result<String, String> {
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(format!("expected a string at byte {}", self.i)),
        };
        self.i += 1;
        let start = self.i;
        while self.peek().is_some_and(|c| c != quote) {
            self.i += 1;
        }
        let s = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        self.expect(quote)?;
        Ok(s)
    }

    fn tuple(&mut self) -> Result<Vec<u64>, String> {
        self.expect(b'(')?;
        let mut out = Vec::new();
        loop {
            self.ws();
            if self.eat(b')') {
                return Ok(out);
            }
            let start = self.i;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
            let digits = std::str::from_utf8(&self.s[start..self.i]).expect("ASCII digits");
            out.push(
                digits
                    .parse()
                    .map_err(|_| format!("bad dimension at byte {start}"))?,
            );
            // Python 2 wrote long integers with an L suffix.
            self.eat(b'L');
            self.ws();
            if !self.eat(b',') {
                self.ws();
                self.expect(b')')?;
                return Ok(out);
            }
        }
    }
}

fn format_err(path: &Path, message: String) -> ModelError {
    ModelError::Format {
        path: path.to_path_buf(),
        message,
    }
}

fn io_err(path: &Path, e: std::io::Error) -> ModelError {
    ModelError::Io {
        path: path.to_path_buf(),
        error: e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_aligned_and_parses_back() {
        for shape in [vec![], vec![7], vec![2, 3, 4]] {
            let h = header_bytes(NpyDType::F32, &shape);
            assert_eq!(h.len() % 64, 0);
            let text = std::str::from_utf8(&h[10..]).unwrap();
            let dict = parse_dict(text).unwrap();
            let Value::Tuple(t) = &dict[2].1 else {
                panic!("shape is not a tuple")
            };
            assert_eq!(t.iter().map(|&d| d as usize).collect::<Vec<_>>(), shape);
        }
    }

    #[test]
    fn dict_parser_takes_python_spellings() {
        let d = parse_dict("{\"descr\": \"<f4\", 'fortran_order': False, 'shape': (3L, 4L)}  \n")
            .unwrap();
        assert!(matches!(&d[0].1, Value::Str(s) if s == "<f4"));
        assert!(matches!(d[1].1, Value::Bool(false)));
        assert!(matches!(&d[2].1, Value::Tuple(t) if *t == [3, 4]));
        assert!(parse_dict("{'shape': (3, 4}").is_err());
        assert!(parse_dict("{'shape': (-3,)}").is_err());
    }
}

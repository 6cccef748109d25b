//! Compiled kernel images on disk, so that a process compiles a kernel file
//! only when no earlier one has compiled the same thing: NVRTC takes tens
//! of seconds per file for a real architecture.
//!
//! An entry is named by a SHA-256 of everything the image depends on: the
//! source, the headers, the compile options, the target and NVRTC's version
//! ([`Key`]). The directory is `$MPINFER_CACHE`, else
//! `$XDG_CACHE_HOME/mpinfer`, else `~/.cache/mpinfer`. Ranks share it: an
//! entry is written to a temporary file in the same directory and renamed
//! into place, so a reader sees a whole entry or none, and writers of the
//! same entry leave one of their identical copies. Each entry carries its
//! length and the SHA-256 of its image; one that does not match (a
//! truncated or damaged file) is ignored and compiled again. A process
//! that misses an entry compiles it under a lock file beside it, so ranks
//! starting together on one node compile each file once. The cache only
//! saves time: failing to read or write it is a warning, never an error.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use super::nvrtc::{self, Source};
use crate::error::KernelError;

/// The environment variable naming the cache directory.
pub const CACHE_ENV: &str = "MPINFER_CACHE";

/// The cache directory `var` (the environment) asks for, or `None` when it
/// names none (no `HOME` either).
pub fn dir_from(var: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let var = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var(CACHE_ENV) {
        return Some(dir);
    }
    // The XDG base directory specification ignores a relative path.
    if let Some(xdg) = var("XDG_CACHE_HOME").filter(|d| d.is_absolute()) {
        return Some(xdg.join("mpinfer"));
    }
    var("HOME").map(|home| home.join(".cache/mpinfer"))
}

/// The cache directory this process's environment asks for.
pub fn dir() -> Option<PathBuf> {
    dir_from(&|name| std::env::var_os(name))
}

/// What a compiled image depends on, hashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// The file and target, to make entries recognisable by name.
    label: String,
    digest: [u8; 32],
}

impl Key {
    pub fn new(
        source: &Source,
        headers: &[Source],
        options: &[String],
        arch: &str,
        nvrtc_version: (i32, i32),
    ) -> Key {
        let mut h = Sha256::new();
        // Every field is preceded by its length, so that no two different
        // keys hash the same bytes.
        let mut field = |bytes: &[u8]| {
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(b"mpinfer kernel image");
        field(source.name.as_bytes());
        field(source.text.as_bytes());
        field(&(headers.len() as u64).to_le_bytes());
        for header in headers {
            field(header.name.as_bytes());
            field(header.text.as_bytes());
        }
        field(&(options.len() as u64).to_le_bytes());
        for option in options {
            field(option.as_bytes());
        }
        field(arch.as_bytes());
        field(&nvrtc_version.0.to_le_bytes());
        field(&nvrtc_version.1.to_le_bytes());
        let label = format!("{}.{arch}", source.name)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Key {
            label,
            digest: h.finish(),
        }
    }

    /// The entry's file name.
    pub fn file_name(&self) -> String {
        format!("{}.{}", self.label, hex(&self.digest))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Magic and format version at the start of every entry.
const MAGIC: &[u8; 12] = b"mpinferK\x01\0\0\0";
/// Magic, key digest, image length, image digest.
const HEADER_LEN: usize = MAGIC.len() + 32 + 8 + 32;

/// An entry for `image` under `key`.
fn encode(key: &Key, image: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + image.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&key.digest);
    out.extend_from_slice(&(image.len() as u64).to_le_bytes());
    out.extend_from_slice(&sha256(image));
    out.extend_from_slice(image);
    out
}

/// The image of an entry for `key`; `None` when it is not one, whole.
fn decode<'a>(key: &Key, entry: &'a [u8]) -> Option<&'a [u8]> {
    let (header, image) = entry.split_at_checked(HEADER_LEN)?;
    let (magic, rest) = header.split_at(MAGIC.len());
    let (digest, rest) = rest.split_at(32);
    let (len, image_digest) = rest.split_at(8);
    let len = u64::from_le_bytes(len.try_into().ok()?);
    let whole = magic == MAGIC
        && digest == key.digest
        && len == image.len() as u64
        && image_digest == sha256(image);
    whole.then_some(image)
}

/// Warns the first time `flag` is raised, so that a cache that cannot be
/// used says so once per process, not once per kernel file.
fn warn_once(flag: &AtomicBool, message: impl FnOnce() -> String) {
    if !flag.swap(true, Ordering::Relaxed) {
        log::warn!("{}", message());
    }
}

static WARNED_UNREADABLE: AtomicBool = AtomicBool::new(false);
static WARNED_UNWRITABLE: AtomicBool = AtomicBool::new(false);
static WARNED_NO_DIR: AtomicBool = AtomicBool::new(false);

/// A directory of compiled images.
#[derive(Debug)]
pub struct KernelCache {
    dir: Option<PathBuf>,
    compiled: AtomicUsize,
}

impl KernelCache {
    /// A cache in `dir`; `None` keeps nothing, compiling every time.
    pub fn new(dir: Option<PathBuf>) -> KernelCache {
        KernelCache {
            dir,
            compiled: AtomicUsize::new(0),
        }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// How many images this cache had NVRTC compile, because it lacked them.
    pub fn compiled(&self) -> usize {
        self.compiled.load(Ordering::Relaxed)
    }

    /// The image stored under `key`, if a whole one is.
    pub fn load(&self, key: &Key) -> Option<Vec<u8>> {
        let path = self.dir.as_ref()?.join(key.file_name());
        let mut entry = match std::fs::read(&path) {
            Ok(entry) => entry,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                warn_once(&WARNED_UNREADABLE, || {
                    format!("kernel cache: cannot read {}: {e}", path.display())
                });
                return None;
            }
        };
        let Some(image) = decode(key, &entry) else {
            warn_once(&WARNED_UNREADABLE, || {
                format!(
                    "kernel cache: ignoring {}, which is damaged or incomplete; compiling again",
                    path.display()
                )
            });
            return None;
        };
        let at = entry.len() - image.len();
        entry.drain(..at);
        Some(entry)
    }

    /// Stores `image` under `key`, warning (once) when it cannot.
    pub fn store(&self, key: &Key, image: &[u8]) {
        let Some(dir) = &self.dir else {
            return;
        };
        if let Err(e) = write_atomically(dir, &key.file_name(), &encode(key, image)) {
            warn_once(&WARNED_UNWRITABLE, || {
                format!(
                    "kernel cache: cannot write to {} ({e}); kernels will be compiled again by \
                     the next process (set {CACHE_ENV} to a writable directory)",
                    dir.display()
                )
            });
        }
    }

    /// The image of `source` compiled for `arch` by the NVRTC in use, from
    /// the cache when it has it, else compiled and stored.
    pub fn compile(
        &self,
        source: &Source,
        arch: &str,
        extra_options: &[&str],
    ) -> Result<Vec<u8>, KernelError> {
        let options = nvrtc::options(arch, extra_options);
        let key = Key::new(source, &nvrtc::HEADERS, &options, arch, nvrtc::version()?);
        self.load_or_make(&key, || {
            Ok(nvrtc::compile(source, arch, extra_options)?.image)
        })
    }

    /// The image under `key`, else `make`'s, stored. Processes sharing the
    /// directory make each entry once: the first to miss it holds a lock on
    /// it while it compiles, and the others, waiting for that lock, then
    /// read what it stored.
    fn load_or_make(
        &self,
        key: &Key,
        make: impl FnOnce() -> Result<Vec<u8>, KernelError>,
    ) -> Result<Vec<u8>, KernelError> {
        if let Some(image) = self.load(key) {
            return Ok(image);
        }
        let _lock = self.lock(key);
        if let Some(image) = self.load(key) {
            return Ok(image);
        }
        let image = make()?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        self.store(key, &image);
        Ok(image)
    }

    /// An exclusive lock on `key`'s entry until dropped, or `None` where
    /// the directory cannot hold one (then each process compiles alone).
    fn lock(&self, key: &Key) -> Option<std::fs::File> {
        let dir = self.dir.as_ref()?;
        std::fs::create_dir_all(dir).ok()?;
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!(".{}.lock", key.file_name())))
            .ok()?;
        file.lock().ok()?;
        Some(file)
    }
}

/// The cache of this process, in [`dir`].
pub fn kernels() -> &'static KernelCache {
    static CACHE: OnceLock<KernelCache> = OnceLock::new();
    CACHE.get_or_init(|| {
        let dir = dir();
        if dir.is_none() {
            warn_once(&WARNED_NO_DIR, || {
                format!(
                    "kernel cache: no directory (set {CACHE_ENV} or HOME); compiling every time"
                )
            });
        }
        KernelCache::new(dir)
    })
}

/// Writes `bytes` to `dir/name` through a temporary file in `dir`, renamed
/// over `name` once complete: the rename is atomic within a file system.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir)?;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let temp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
    let written = std::fs::File::create(&temp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| std::fs::rename(&temp, dir.join(name)));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// SHA-256 (FIPS 180-4), for cache keys and entry checksums.
struct Sha256 {
    state: [u32; 8],
    block: [u8; 64],
    filled: usize,
    length: u64,
}

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

impl Sha256 {
    fn new() -> Sha256 {
        Sha256 {
            state: [
                0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
                0x5be0cd19,
            ],
            block: [0; 64],
            filled: 0,
            length: 0,
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        self.length += data.len() as u64;
        while !data.is_empty() {
            let n = (64 - self.filled).min(data.len());
            self.block[self.filled..self.filled + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == 64 {
                compress(&mut self.state, &self.block);
                self.filled = 0;
            }
        }
    }

    fn finish(mut self) -> [u8; 32] {
        let bits = self.length.wrapping_mul(8);
        self.update(&[0x80]);
        while self.filled != 56 {
            self.update(&[0]);
        }
        self.update(&bits.to_be_bytes());
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(self.state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

fn compress(state: &mut [u32; 8], block: &[u8; 64]) {
    let mut w = [0u32; 64];
    for (i, chunk) in block.chunks_exact(4).enumerate() {
        w[i] = u32::from_be_bytes(chunk.try_into().unwrap());
    }
    for i in 16..64 {
        let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
        let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16]
            .wrapping_add(s0)
            .wrapping_add(w[i - 7])
            .wrapping_add(s1);
    }
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
    for i in 0..64 {
        let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
        let ch = (e & f) ^ (!e & g);
        let t1 = h
            .wrapping_add(s1)
            .wrapping_add(ch)
            .wrapping_add(K[i])
            .wrapping_add(w[i]);
        let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
        let maj = (a & b) ^ (a & c) ^ (b & c);
        let t2 = s0.wrapping_add(maj);
        (h, g, f, e, d, c, b, a) = (g, f, e, d.wrapping_add(t1), c, b, a, t1.wrapping_add(t2));
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
        *s = s.wrapping_add(v);
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(data);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary one, removed when
    /// dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir()
                .join(format!("mpinfer-cache-test-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    const SOURCE: Source = Source {
        name: "k.cu",
        text: "extern \"C\" __global__ void k() {}",
    };
    const HEADER: Source = Source {
        name: "h.cuh",
        text: "#define ONE 1",
    };

    fn key() -> Key {
        Key::new(&SOURCE, &[HEADER], &options(), "sm_90", (12, 9))
    }

    fn options() -> Vec<String> {
        vec!["--gpu-architecture=sm_90".into(), "-std=c++17".into()]
    }

    #[test]
    fn sha256_matches_the_standards_examples() {
        let cases: [(&[u8], &str); 3] = [
            (
                b"",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
            (
                b"abc",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            // 56 bytes: the length no longer fits in the first block.
            (
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
            ),
        ];
        for (data, want) in cases {
            assert_eq!(
                hex(&sha256(data)),
                want,
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
        let million = vec![b'a'; 1_000_000];
        assert_eq!(
            hex(&sha256(&million)),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
        // Fed in uneven pieces, the same digest.
        let mut h = Sha256::new();
        for piece in million.chunks(37) {
            h.update(piece);
        }
        assert_eq!(h.finish(), sha256(&million));
    }

    #[test]
    fn the_directory_follows_the_environment() {
        fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
            move |name| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| OsString::from(v))
            }
        }
        let all = [
            ("MPINFER_CACHE", "/scratch/k"),
            ("XDG_CACHE_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(dir_from(&env(&all)), Some("/scratch/k".into()));
        assert_eq!(dir_from(&env(&all[1..])), Some("/xdg/mpinfer".into()));
        assert_eq!(
            dir_from(&env(&all[2..])),
            Some("/home/u/.cache/mpinfer".into())
        );
        let relative = [("XDG_CACHE_HOME", "xdg"), ("HOME", "/home/u")];
        assert_eq!(
            dir_from(&env(&relative)),
            Some("/home/u/.cache/mpinfer".into())
        );
        let empty = [("MPINFER_CACHE", ""), ("HOME", "/home/u")];
        assert_eq!(
            dir_from(&env(&empty)),
            Some("/home/u/.cache/mpinfer".into())
        );
        assert_eq!(dir_from(&env(&[])), None);
    }

    #[test]
    fn an_image_comes_back_as_stored() {
        let dir = TempDir::new("round-trip");
        let cache = KernelCache::new(Some(dir.0.join("nested")));
        let image: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        assert_eq!(cache.load(&key()), None);
        cache.store(&key(), &image);
        assert_eq!(cache.load(&key()), Some(image.clone()));
        // Another process's cache, in the same directory.
        let other = KernelCache::new(Some(dir.0.join("nested")));
        assert_eq!(other.load(&key()), Some(image));
        assert_eq!(files(&dir.0.join("nested")), [key().file_name()]);
        assert!(key().file_name().starts_with("k.cu.sm_90."));
    }

    /// Caches of four processes, on one directory, missing one entry at
    /// the same moment: one compiles, and the others read its image.
    #[test]
    fn processes_missing_an_entry_together_compile_it_once() {
        let dir = TempDir::new("together");
        let made = AtomicUsize::new(0);
        let start = std::sync::Barrier::new(4);
        let images: Vec<Vec<u8>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let cache = KernelCache::new(Some(dir.0.clone()));
                        start.wait();
                        cache
                            .load_or_make(&key(), || {
                                made.fetch_add(1, Ordering::SeqCst);
                                // Long enough for the others to miss too.
                                std::thread::sleep(std::time::Duration::from_millis(200));
                                Ok(vec![42; 1000])
                            })
                            .unwrap()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert_eq!(made.load(Ordering::SeqCst), 1);
        assert!(images.iter().all(|i| *i == vec![42; 1000]));
    }

    #[test]
    fn the_key_changes_with_each_component() {
        let base = key();
        let other_source = Source {
            text: "extern \"C\" __global__ void k2() {}",
            ..SOURCE
        };
        let renamed = Source {
            name: "j.cu",
            ..SOURCE
        };
        let other_header = Source {
            text: "#define ONE 2",
            ..HEADER
        };
        let mut more_options = options();
        more_options.push("-lineinfo".into());
        let variants = [
            Key::new(&other_source, &[HEADER], &options(), "sm_90", (12, 9)),
            Key::new(&renamed, &[HEADER], &options(), "sm_90", (12, 9)),
            Key::new(&SOURCE, &[other_header], &options(), "sm_90", (12, 9)),
            Key::new(&SOURCE, &[], &options(), "sm_90", (12, 9)),
            Key::new(&SOURCE, &[HEADER], &more_options, "sm_90", (12, 9)),
            Key::new(&SOURCE, &[HEADER], &options(), "sm_80", (12, 9)),
            Key::new(&SOURCE, &[HEADER], &options(), "compute_90", (12, 9)),
            Key::new(&SOURCE, &[HEADER], &options(), "sm_90", (13, 0)),
            Key::new(&SOURCE, &[HEADER], &options(), "sm_90", (12, 8)),
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(v.digest, base.digest, "variant {i}");
            assert_ne!(v.file_name(), base.file_name(), "variant {i}");
        }
        for (i, a) in variants.iter().enumerate() {
            for b in &variants[i + 1..] {
                assert_ne!(a.digest, b.digest);
            }
        }
        // And the same components give the same key.
        assert_eq!(key(), base);
    }

    #[test]
    fn concurrent_writers_leave_one_whole_entry() {
        let dir = TempDir::new("concurrent");
        let image: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let cache = KernelCache::new(Some(dir.0.clone()));
                    for _ in 0..5 {
                        cache.store(&key(), &image);
                        // Once stored, an entry is there, whole, whatever
                        // the other writers are doing.
                        let seen = cache.load(&key());
                        assert!(
                            seen.as_ref() == Some(&image),
                            "a reader saw a partial entry"
                        );
                    }
                });
            }
        });
        assert_eq!(
            files(&dir.0),
            [key().file_name()],
            "no temporary files left"
        );
        let cache = KernelCache::new(Some(dir.0.clone()));
        assert_eq!(cache.load(&key()), Some(image));
    }

    #[test]
    fn a_truncated_or_damaged_entry_is_a_miss() {
        let dir = TempDir::new("damaged");
        let cache = KernelCache::new(Some(dir.0.clone()));
        let image = vec![42u8; 5000];
        let path = dir.0.join(key().file_name());
        cache.store(&key(), &image);
        let whole = std::fs::read(&path).unwrap();
        for cut in [0, 10, HEADER_LEN - 1, HEADER_LEN, whole.len() - 1] {
            std::fs::write(&path, &whole[..cut]).unwrap();
            assert_eq!(cache.load(&key()), None, "cut at {cut}");
        }
        let mut flipped = whole.clone();
        *flipped.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert_eq!(cache.load(&key()), None, "a flipped bit");
        // An entry copied under another key's name.
        let other = Key::new(&SOURCE, &[], &options(), "sm_90", (12, 9));
        std::fs::write(dir.0.join(other.file_name()), &whole).unwrap();
        assert_eq!(cache.load(&other), None, "another key's entry");
        // Storing again repairs it.
        cache.store(&key(), &image);
        assert_eq!(cache.load(&key()), Some(image));
    }

    #[test]
    fn an_unwritable_directory_stores_nothing_and_does_not_fail() {
        let dir = TempDir::new("unwritable");
        // A directory below a regular file cannot be created, even by root.
        let file = dir.0.join("file");
        std::fs::write(&file, b"not a directory").unwrap();
        let cache = KernelCache::new(Some(file.join("cache")));
        cache.store(&key(), b"image");
        assert_eq!(cache.load(&key()), None);
        assert_eq!(files(&dir.0), ["file"]);
    }
}

//! Finding NVRTC and compiling the `.cu` sources with it.
//!
//! NVRTC is searched for, in order, at `$MPINFER_NVRTC` (a library or its
//! directory), under `$CUDA_HOME` and `$CUDA_PATH` (`lib64`, `lib`), in
//! `/usr/local/cuda*/lib64` (newest version first), in NVIDIA's pip wheels
//! (`nvidia/cu13/lib`, then `nvidia/cuda_nvrtc/lib`) of `$VIRTUAL_ENV` and of
//! a `.venv` above the current directory or the executable, and last on the
//! dynamic loader's own path. Each place is tried for `libnvrtc.so.13`, then
//! `libnvrtc.so.12`, then `libnvrtc.so`. [`candidates`] computes that list.
//! Libraries are opened by full path because `LD_LIBRARY_PATH` is read once,
//! when the process starts, so setting it later has no effect.
//!
//! An NVRTC newer than the driver is passed over: what it compiles needs a
//! driver of its own major version or later.
//!
//! Every NVRTC call goes through the functions resolved here from the
//! library that was probed, never through cudarc's `nvrtc::sys`. cudarc
//! opens its own handle by name, trying `libnvrtc.so`, `libnvrtc.so.12`
//! and older sonames but never `libnvrtc.so.13`; the loader answers such a
//! request with an already loaded library only when the name matches its
//! soname, so a CUDA 13 library loaded here would be invisible to cudarc,
//! which would then load whatever else it finds on the search path, or
//! panic. Calling through our own handle also keeps NVRTC's return codes as
//! integers until they are known: a newer NVRTC returns codes that cudarc's
//! CUDA 12.6 enum lacks, and such a value must never become that enum. Only
//! cudarc's types (`nvrtcResult`, `NvrtcError`, and `Ptx` to hand images to
//! the driver) are used; calling cudarc's NVRTC functions (`compile_ptx`
//! and the like) anywhere would load a second, possibly different, NVRTC.
//! The path reported is the file the loader actually mapped (`dladdr`):
//! asked for a file whose soname is already loaded, it returns that one.

use std::ffi::{c_char, c_int, c_void, CStr, CString, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cudarc::nvrtc::sys::nvrtcResult;

use crate::error::KernelError;

/// A CUDA source file, compiled as one module.
#[derive(Clone, Copy, Debug)]
pub struct Source {
    pub name: &'static str,
    pub text: &'static str,
}

/// Headers the sources include; handed to NVRTC by name, since it is given
/// no include directories.
pub const HEADERS: [Source; 2] = [
    Source {
        name: "common.cuh",
        text: include_str!("../../cuda/common.cuh"),
    },
    Source {
        name: "gemm_core.cuh",
        text: include_str!("../../cuda/gemm_core.cuh"),
    },
];

pub const GEMM: Source = Source {
    name: "gemm.cu",
    text: include_str!("../../cuda/gemm.cu"),
};
pub const CONV: Source = Source {
    name: "conv.cu",
    text: include_str!("../../cuda/conv.cu"),
};
pub const POOL: Source = Source {
    name: "pool.cu",
    text: include_str!("../../cuda/pool.cu"),
};
pub const ELEMENTWISE: Source = Source {
    name: "elementwise.cu",
    text: include_str!("../../cuda/elementwise.cu"),
};

pub const UNARY: Source = Source {
    name: "unary.cu",
    text: include_str!("../../cuda/unary.cu"),
};
pub const BROADCAST: Source = Source {
    name: "broadcast.cu",
    text: include_str!("../../cuda/broadcast.cu"),
};
pub const LAYOUT: Source = Source {
    name: "layout.cu",
    text: include_str!("../../cuda/layout.cu"),
};
pub const REDUCE: Source = Source {
    name: "reduce.cu",
    text: include_str!("../../cuda/reduce.cu"),
};
pub const NORM: Source = Source {
    name: "norm.cu",
    text: include_str!("../../cuda/norm.cu"),
};
pub const MATMUL: Source = Source {
    name: "matmul.cu",
    text: include_str!("../../cuda/matmul.cu"),
};

/// Every kernel source, one module each.
pub const SOURCES: [Source; 10] = [
    GEMM,
    CONV,
    POOL,
    ELEMENTWISE,
    UNARY,
    BROADCAST,
    LAYOUT,
    REDUCE,
    NORM,
    MATMUL,
];

/// The environment variable naming the NVRTC library (or its directory);
/// searched before every other place.
pub const NVRTC_ENV: &str = "MPINFER_NVRTC";

/// The names tried in each directory, newest first.
pub const LIBRARY_NAMES: [&str; 3] = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"];

/// Where to look for NVRTC, in order: full paths, then the bare names the
/// dynamic loader searches for itself. `var` reads the environment;
/// `toolkits` are the `/usr/local/cuda*` directories in any order;
/// `site_packages` the Python environments' `site-packages`, in the order
/// to search them.
pub fn candidates(
    var: &dyn Fn(&str) -> Option<OsString>,
    toolkits: &[PathBuf],
    site_packages: &[PathBuf],
) -> Vec<PathBuf> {
    let var = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let mut out = Vec::new();
    let mut dirs = Vec::new();
    if let Some(explicit) = var(NVRTC_ENV) {
        out.push(explicit.clone());
        dirs.push(explicit);
    }
    for home in ["CUDA_HOME", "CUDA_PATH"].into_iter().filter_map(var) {
        dirs.push(home.join("lib64"));
        dirs.push(home.join("lib"));
    }
    let mut toolkits = toolkits.to_vec();
    // Newest first; an unversioned `cuda` is usually a link to one of them.
    toolkits.sort_by_key(|t| std::cmp::Reverse(toolkit_version(t)));
    dirs.extend(toolkits.iter().map(|t| t.join("lib64")));
    for site in site_packages {
        dirs.push(site.join("nvidia/cu13/lib"));
        dirs.push(site.join("nvidia/cuda_nvrtc/lib"));
    }
    for dir in &dirs {
        out.extend(LIBRARY_NAMES.iter().map(|name| dir.join(name)));
    }
    out.extend(LIBRARY_NAMES.iter().map(PathBuf::from));
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(p.clone()));
    out
}

/// `[12, 6]` for `cuda-12.6`; `None` for a directory without a version.
fn toolkit_version(dir: &Path) -> Option<Vec<u32>> {
    let name = dir.file_name()?.to_str()?;
    let version = name.strip_prefix("cuda-")?;
    version.split('.').map(|p| p.parse().ok()).collect()
}

/// The `/usr/local/cuda*` directories.
fn toolkits() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/usr/local") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name == "cuda" || name.starts_with("cuda-")
        })
        .map(|e| e.path())
        .collect()
}

/// `site-packages` of `$VIRTUAL_ENV` and of a `.venv` in every ancestor of
/// the current directory and of the executable.
fn site_packages() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = std::env::var_os("VIRTUAL_ENV")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .collect();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(|a| a.join(".venv")));
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(|a| a.join(".venv")));
    }
    let mut dirs = Vec::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root.join("lib")) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
            .map(|e| e.path().join("site-packages"))
            .collect();
        found.sort();
        for dir in found.into_iter().rev() {
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    dirs
}

type Handle = *mut c_void;
type VersionFn = unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int;
type CountFn = unsafe extern "C" fn(*mut c_int) -> c_int;
type ErrorStringFn = unsafe extern "C" fn(c_int) -> *const c_char;
type CreateFn = unsafe extern "C" fn(
    *mut Handle,
    *const c_char,
    *const c_char,
    c_int,
    *const *const c_char,
    *const *const c_char,
) -> c_int;
type DestroyFn = unsafe extern "C" fn(*mut Handle) -> c_int;
type CompileFn = unsafe extern "C" fn(Handle, c_int, *const *const c_char) -> c_int;
type SizeFn = unsafe extern "C" fn(Handle, *mut usize) -> c_int;
type ReadFn = unsafe extern "C" fn(Handle, *mut c_char) -> c_int;

/// The NVRTC functions used, resolved from one library.
struct Api {
    version: VersionFn,
    error_string: ErrorStringFn,
    num_archs: Option<CountFn>,
    archs: Option<CountFn>,
    create: CreateFn,
    destroy: DestroyFn,
    compile: CompileFn,
    log_size: SizeFn,
    log: ReadFn,
    ptx_size: SizeFn,
    ptx: ReadFn,
    cubin_size: SizeFn,
    cubin: ReadFn,
}

/// An NVRTC library, loaded and kept open for the life of the process.
pub struct Nvrtc {
    path: PathBuf,
    version: (i32, i32),
    architectures: Vec<i32>,
    api: Api,
    // Keeps the functions of `api` mapped; never dropped once bound.
    _library: libloading::Library,
}

impl Nvrtc {
    /// The library's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `(major, minor)`.
    pub fn version(&self) -> (i32, i32) {
        self.version
    }

    /// The real architectures (`sm_XY` as `XY`) it compiles for; empty when
    /// it predates `nvrtcGetSupportedArchs` (CUDA 11.2).
    pub fn architectures(&self) -> &[i32] {
        &self.architectures
    }

    /// Opens the library at `file` (a path, or a bare name for the loader
    /// to search) and reads its version and architectures.
    fn open(file: &Path) -> Result<Nvrtc, KernelError> {
        let load_error = |source| KernelError::LoadNvrtc {
            path: file.to_path_buf(),
            source,
        };
        // SAFETY: NVRTC's initialisers only set up its own state.
        let library = unsafe { libloading::Library::new(file) }.map_err(load_error)?;
        // SAFETY: each type is the function's C signature in nvrtc.h, the
        // same in CUDA 11, 12 and 13.
        let api = unsafe {
            Api {
                version: *library.get(b"nvrtcVersion\0").map_err(load_error)?,
                error_string: *library.get(b"nvrtcGetErrorString\0").map_err(load_error)?,
                num_archs: library.get(b"nvrtcGetNumSupportedArchs\0").ok().map(|f| *f),
                archs: library.get(b"nvrtcGetSupportedArchs\0").ok().map(|f| *f),
                create: *library.get(b"nvrtcCreateProgram\0").map_err(load_error)?,
                destroy: *library.get(b"nvrtcDestroyProgram\0").map_err(load_error)?,
                compile: *library.get(b"nvrtcCompileProgram\0").map_err(load_error)?,
                log_size: *library
                    .get(b"nvrtcGetProgramLogSize\0")
                    .map_err(load_error)?,
                log: *library.get(b"nvrtcGetProgramLog\0").map_err(load_error)?,
                ptx_size: *library.get(b"nvrtcGetPTXSize\0").map_err(load_error)?,
                ptx: *library.get(b"nvrtcGetPTX\0").map_err(load_error)?,
                cubin_size: *library.get(b"nvrtcGetCUBINSize\0").map_err(load_error)?,
                cubin: *library.get(b"nvrtcGetCUBIN\0").map_err(load_error)?,
            }
        };
        let path = loaded_file(api.version as *const c_void).unwrap_or_else(|| file.into());
        let mut nvrtc = Nvrtc {
            path,
            version: (0, 0),
            architectures: Vec::new(),
            api,
            _library: library,
        };
        let (mut major, mut minor): (c_int, c_int) = (0, 0);
        // SAFETY: both pointers are valid for writes.
        nvrtc.check("version", unsafe {
            (nvrtc.api.version)(&mut major, &mut minor)
        })?;
        nvrtc.version = (major, minor);
        if let Some(driver) = driver_version() {
            if major > driver / 1000 {
                return Err(KernelError::Unavailable(format!(
                    "{nvrtc} is newer than the driver's CUDA {}.{}",
                    driver / 1000,
                    driver % 1000 / 10
                )));
            }
        }
        nvrtc.architectures = nvrtc.read_architectures()?;
        Ok(nvrtc)
    }

    fn read_architectures(&self) -> Result<Vec<i32>, KernelError> {
        let (Some(num_archs), Some(archs)) = (self.api.num_archs, self.api.archs) else {
            return Ok(Vec::new());
        };
        let mut n: c_int = 0;
        // SAFETY: the pointer is valid for writes.
        self.check("architectures", unsafe { num_archs(&mut n) })?;
        let mut list = vec![0 as c_int; n.max(0) as usize];
        // SAFETY: the buffer holds as many entries as NVRTC reported.
        self.check("architectures", unsafe { archs(list.as_mut_ptr()) })?;
        Ok(list)
    }

    /// `Err` unless `code` is success, with cudarc's error where the code is
    /// one it knows.
    fn check(&self, what: &str, code: c_int) -> Result<(), KernelError> {
        if code == 0 {
            return Ok(());
        }
        match known_result(code) {
            Some(r) => r.result().map_err(|source| KernelError::Nvrtc {
                what: what.to_string(),
                source,
            }),
            None => Err(KernelError::Unavailable(format!(
                "NVRTC {what}: {}",
                self.error_string(code)
            ))),
        }
    }

    /// NVRTC's own name for `code`.
    fn error_string(&self, code: c_int) -> String {
        // SAFETY: NVRTC returns a static string (or NULL) for any code.
        let text = unsafe { (self.api.error_string)(code) };
        if text.is_null() {
            return format!("error {code}");
        }
        // SAFETY: non-NULL, it is a NUL-terminated static string.
        let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
        format!("{text} (error {code})")
    }
}

impl fmt::Display for Nvrtc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (major, minor) = self.version;
        write!(f, "NVRTC {major}.{minor} at {}", self.path.display())
    }
}

/// The codes cudarc's `nvrtcResult` (CUDA 12.6) has; `None` for others.
fn known_result(code: c_int) -> Option<nvrtcResult> {
    use nvrtcResult::*;
    Some(match code {
        0 => NVRTC_SUCCESS,
        1 => NVRTC_ERROR_OUT_OF_MEMORY,
        2 => NVRTC_ERROR_PROGRAM_CREATION_FAILURE,
        3 => NVRTC_ERROR_INVALID_INPUT,
        4 => NVRTC_ERROR_INVALID_PROGRAM,
        5 => NVRTC_ERROR_INVALID_OPTION,
        6 => NVRTC_ERROR_COMPILATION,
        7 => NVRTC_ERROR_BUILTIN_OPERATION_FAILURE,
        8 => NVRTC_ERROR_NO_NAME_EXPRESSIONS_AFTER_COMPILATION,
        9 => NVRTC_ERROR_NO_LOWERED_NAMES_BEFORE_COMPILATION,
        10 => NVRTC_ERROR_NAME_EXPRESSION_NOT_VALID,
        11 => NVRTC_ERROR_INTERNAL_ERROR,
        12 => NVRTC_ERROR_TIME_FILE_WRITE_FAILED,
        _ => return None,
    })
}

/// The CUDA version of the driver (`12040` for 12.4), when there is one.
fn driver_version() -> Option<i32> {
    if !crate::device::cuda_driver_present() {
        return None;
    }
    let mut version = 0;
    // SAFETY: the library is present; the pointer is valid for writes.
    let r = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) };
    (r == cudarc::driver::sys::CUresult::CUDA_SUCCESS).then_some(version)
}

#[repr(C)]
struct DlInfo {
    file: *const c_char,
    base: *mut c_void,
    symbol: *const c_char,
    address: *mut c_void,
}

extern "C" {
    fn dladdr(address: *const c_void, info: *mut DlInfo) -> c_int;
}

/// The file of the loaded object holding `address`: where the loader found
/// a library it was given by bare name.
fn loaded_file(address: *const c_void) -> Option<PathBuf> {
    let mut info = DlInfo {
        file: std::ptr::null(),
        base: std::ptr::null_mut(),
        symbol: std::ptr::null(),
        address: std::ptr::null_mut(),
    };
    // SAFETY: dladdr only reads the loader's tables and writes `info`.
    if unsafe { dladdr(address, &mut info) } == 0 || info.file.is_null() {
        return None;
    }
    // SAFETY: non-NULL, dli_fname is a NUL-terminated string owned by the
    // loader for as long as the object stays loaded.
    let file = unsafe { CStr::from_ptr(info.file) };
    Some(PathBuf::from(file.to_string_lossy().into_owned()))
}

/// The library every compilation uses, once one is found.
static BOUND: Mutex<Option<&'static Nvrtc>> = Mutex::new(None);

fn bound() -> std::sync::MutexGuard<'static, Option<&'static Nvrtc>> {
    BOUND.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes `nvrtc` the library of the process.
fn bind(slot: &mut Option<&'static Nvrtc>, nvrtc: Nvrtc) -> &'static Nvrtc {
    // Leaked: the library stays loaded until the process ends anyway, and
    // compilations may hold its functions at any time.
    let nvrtc: &'static Nvrtc = Box::leak(Box::new(nvrtc));
    *slot = Some(nvrtc);
    nvrtc
}

/// Opens the NVRTC library at `path` (a file, or a directory holding one of
/// [`LIBRARY_NAMES`]) and makes it the one the kernels compile with. Once a
/// library is bound, asking for the same file again succeeds and another
/// file is an error.
pub fn load_library(path: &Path) -> Result<(), KernelError> {
    let files: Vec<PathBuf> = if path.is_dir() {
        LIBRARY_NAMES.iter().map(|n| path.join(n)).collect()
    } else {
        vec![path.to_path_buf()]
    };
    let file = files
        .iter()
        .find(|f| f.is_file())
        .unwrap_or(&files[0])
        .clone();
    let mut slot = bound();
    match *slot {
        None => {
            bind(&mut slot, Nvrtc::open(&file)?);
            Ok(())
        }
        Some(nvrtc) if same_file(&file, nvrtc.path()) => Ok(()),
        Some(nvrtc) => {
            // Opened anyway so that a file that does not load says why.
            Nvrtc::open(&file)?;
            Err(KernelError::Unavailable(format!(
                "{nvrtc} is already in use; cannot switch to {}",
                file.display()
            )))
        }
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The NVRTC library in use, searched for the first time (see the module
/// documentation); `Err` says where it looked and what failed.
pub fn library() -> Result<&'static Nvrtc, KernelError> {
    let mut slot = bound();
    if let Some(nvrtc) = *slot {
        return Ok(nvrtc);
    }
    let var = |name: &str| std::env::var_os(name);
    let mut failures = Vec::new();
    for file in candidates(&var, &toolkits(), &site_packages()) {
        let bare = file.parent().is_none_or(|p| p.as_os_str().is_empty());
        if !bare && !file.is_file() {
            continue;
        }
        match Nvrtc::open(&file) {
            Ok(nvrtc) => return Ok(bind(&mut slot, nvrtc)),
            // A bare name the loader does not find is no news.
            Err(e) if !bare || !matches!(e, KernelError::LoadNvrtc { .. }) => {
                failures.push(e.chain())
            }
            Err(_) => {}
        }
    }
    let mut why = format!(
        "no usable NVRTC library ({}) in ${NVRTC_ENV}, $CUDA_HOME, $CUDA_PATH, \
         /usr/local/cuda*, the nvidia wheels of $VIRTUAL_ENV or .venv, or the loader's path: \
         set {NVRTC_ENV} to it, or install NVIDIA's wheel into .venv \
         (nvidia-cuda-nvrtc-cu12, as scripts/setup.sh does, or nvidia-cuda-nvrtc 13)",
        LIBRARY_NAMES.join(", ")
    );
    for failure in failures {
        why.push_str("; ");
        why.push_str(&failure);
    }
    Err(KernelError::Unavailable(why))
}

/// Makes sure NVRTC is loaded; returns the library's file.
pub fn ensure_loaded() -> Result<String, KernelError> {
    library().map(|nvrtc| nvrtc.path().display().to_string())
}

/// NVRTC's version, `(major, minor)`.
pub fn version() -> Result<(i32, i32), KernelError> {
    library().map(Nvrtc::version)
}

/// The real architectures (`sm_XY` as `XY`) this NVRTC can compile for.
pub fn supported_architectures() -> Result<Vec<i32>, KernelError> {
    library().map(|nvrtc| nvrtc.architectures().to_vec())
}

/// What to compile for a device of compute capability `device_cc` with an
/// NVRTC that knows the real architectures `supported`:
///
/// - `sm_XY` for the device itself, when listed;
/// - else the newest listed `sm_XZ` of the same major with `Z` below the
///   device's minor: a cubin runs on later minors of its major (an `sm_86`
///   one on an 8.9 device), and needs no compiling when it is loaded;
/// - else `compute_XY` PTX for the newest listed architecture below the
///   device, which the driver compiles for it when loading (a device newer
///   than this NVRTC);
/// - else an error: the device is older than anything this NVRTC knows, as
///   for Volta and older with CUDA 13.
pub fn compile_target(device_cc: (i32, i32), supported: &[i32]) -> Result<String, KernelError> {
    let (major, minor) = device_cc;
    let want = major * 10 + minor;
    let below = supported.iter().copied().filter(|&a| a <= want);
    if let Some(sm) = below.clone().filter(|a| a / 10 == major).max() {
        return Ok(format!("sm_{sm}"));
    }
    match below.max() {
        Some(ptx) => Ok(format!("compute_{ptx}")),
        None => Err(KernelError::Unavailable(format!(
            "NVRTC cannot compile for compute capability {major}.{minor}: it knows \
             {supported:?} (CUDA 13 dropped compute capability 7.2 and older; CUDA 12 \
             compiles for 5.0 and later)"
        ))),
    }
}

/// Compiler output: the image to load, and NVRTC's log (warnings, and with
/// `--ptxas-options=-v` the register and spill counts).
#[derive(Clone, Debug)]
pub struct Compiled {
    /// PTX text (NUL-terminated, as the driver wants it) for a virtual
    /// architecture, or a cubin for a real one.
    pub image: Vec<u8>,
    pub log: String,
}

/// Every option NVRTC is given to compile for `arch`: what an image
/// depends on besides the sources and the compiler.
pub fn options(arch: &str, extra_options: &[&str]) -> Vec<String> {
    let mut options = vec![
        format!("--gpu-architecture={arch}"),
        "-std=c++17".to_string(),
    ];
    options.extend(extra_options.iter().map(|o| o.to_string()));
    options
}

/// A program, destroyed however compilation ends.
struct Program<'a> {
    nvrtc: &'a Nvrtc,
    handle: Handle,
}

impl Drop for Program<'_> {
    fn drop(&mut self) {
        // SAFETY: the handle came from nvrtcCreateProgram and is destroyed
        // once; a failure leaves nothing to clean up.
        unsafe {
            (self.nvrtc.api.destroy)(&mut self.handle);
        }
    }
}

impl Program<'_> {
    /// Reads one of the program's outputs: `size` says how long, `read`
    /// fills a buffer of that length.
    fn read(&self, what: &str, size: SizeFn, read: ReadFn) -> Result<Vec<u8>, KernelError> {
        let mut len = 0usize;
        // SAFETY: the handle is live; the pointer is valid for writes.
        let code = unsafe { size(self.handle, &mut len) };
        self.nvrtc.check(what, code)?;
        // Never empty, in case NVRTC writes a terminating NUL regardless.
        let mut out = vec![0u8; len.max(1)];
        // SAFETY: the buffer holds at least the length NVRTC reported.
        let code = unsafe { read(self.handle, out.as_mut_ptr().cast()) };
        self.nvrtc.check(what, code)?;
        out.truncate(len);
        Ok(out)
    }
}

fn cstring(s: &str) -> Result<CString, KernelError> {
    CString::new(s).map_err(|_| KernelError::Invalid {
        op: "NVRTC",
        what: format!("NUL byte in {s:?}"),
    })
}

/// Compiles `source` for `arch`: `compute_XY` gives PTX, `sm_XY` a cubin.
/// On failure the error carries NVRTC's log.
pub fn compile(
    source: &Source,
    arch: &str,
    extra_options: &[&str],
) -> Result<Compiled, KernelError> {
    let nvrtc = library()?;
    let text = cstring(source.text)?;
    let name = cstring(source.name)?;
    let header_texts = HEADERS
        .iter()
        .map(|h| cstring(h.text))
        .collect::<Result<Vec<_>, _>>()?;
    let header_names = HEADERS
        .iter()
        .map(|h| cstring(h.name))
        .collect::<Result<Vec<_>, _>>()?;
    let text_ptrs: Vec<*const c_char> = header_texts.iter().map(|h| h.as_ptr()).collect();
    let name_ptrs: Vec<*const c_char> = header_names.iter().map(|h| h.as_ptr()).collect();
    let options = options(arch, extra_options)
        .iter()
        .map(|o| cstring(o))
        .collect::<Result<Vec<_>, _>>()?;
    let option_ptrs: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();

    let mut handle = std::ptr::null_mut();
    // SAFETY: every pointer points into a CString or Vec that outlives the
    // call, and the counts are those vectors' lengths.
    let created = unsafe {
        (nvrtc.api.create)(
            &mut handle,
            text.as_ptr(),
            name.as_ptr(),
            HEADERS.len() as c_int,
            text_ptrs.as_ptr(),
            name_ptrs.as_ptr(),
        )
    };
    nvrtc.check("create program", created)?;
    let program = Program { nvrtc, handle };
    // SAFETY: the handle is live; the options outlive the call.
    let result = unsafe {
        (nvrtc.api.compile)(
            program.handle,
            option_ptrs.len() as c_int,
            option_ptrs.as_ptr(),
        )
    };
    let log = program.read("log", nvrtc.api.log_size, nvrtc.api.log)?;
    let log = CStr::from_bytes_until_nul(&log)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default();
    if result != 0 {
        return Err(match known_result(result) {
            Some(r) => KernelError::Compile {
                file: source.name,
                arch: arch.to_string(),
                log,
                source: cudarc::nvrtc::result::NvrtcError(r),
            },
            None => KernelError::Unavailable(format!(
                "NVRTC compiling {} for {arch}: {}:\n{log}",
                source.name,
                nvrtc.error_string(result)
            )),
        });
    }
    let image = if arch.starts_with("sm_") {
        program.read("cubin", nvrtc.api.cubin_size, nvrtc.api.cubin)?
    } else {
        program.read("PTX", nvrtc.api.ptx_size, nvrtc.api.ptx)?
    };
    Ok(Compiled { image, log })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    fn paths(list: &[&str]) -> Vec<PathBuf> {
        list.iter().map(PathBuf::from).collect()
    }

    /// Every name of `LIBRARY_NAMES` in `dir`, in order.
    fn in_dir(dir: &str) -> Vec<String> {
        ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]
            .iter()
            .map(|n| format!("{dir}/{n}"))
            .collect()
    }

    #[test]
    fn candidates_follow_the_search_order() {
        let vars = [
            ("MPINFER_NVRTC", "/opt/nvrtc"),
            ("CUDA_HOME", "/opt/cuda"),
            ("CUDA_PATH", ""),
        ];
        let toolkits = paths(&[
            "/usr/local/cuda",
            "/usr/local/cuda-12.6",
            "/usr/local/cuda-13.0",
            "/usr/local/cuda-12.10",
            "/usr/local/cuda-12",
        ]);
        let sites = paths(&["/venv/lib/python3.12/site-packages"]);
        let got: Vec<String> = candidates(&env(&vars), &toolkits, &sites)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let site = "/venv/lib/python3.12/site-packages/nvidia";
        let mut want = vec!["/opt/nvrtc".to_string()];
        for dir in [
            "/opt/nvrtc",
            "/opt/cuda/lib64",
            "/opt/cuda/lib",
            "/usr/local/cuda-13.0/lib64",
            "/usr/local/cuda-12.10/lib64",
            "/usr/local/cuda-12.6/lib64",
            "/usr/local/cuda-12/lib64",
            "/usr/local/cuda/lib64",
            &format!("{site}/cu13/lib"),
            &format!("{site}/cuda_nvrtc/lib"),
        ] {
            want.extend(in_dir(dir));
        }
        want.extend(["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"].map(String::from));
        assert_eq!(got, want);
    }

    #[test]
    fn candidates_without_any_place_are_the_loaders_names_and_repeats_are_dropped() {
        let none = candidates(&env(&[]), &[], &[]);
        assert_eq!(
            none,
            paths(&["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"])
        );
        // CUDA_HOME and CUDA_PATH naming the toolkit the scan also finds.
        let vars = [
            ("CUDA_HOME", "/usr/local/cuda-12.6"),
            ("CUDA_PATH", "/usr/local/cuda-12.6"),
        ];
        let got = candidates(&env(&vars), &paths(&["/usr/local/cuda-12.6"]), &[]);
        let mut want = in_dir("/usr/local/cuda-12.6/lib64");
        want.extend(in_dir("/usr/local/cuda-12.6/lib"));
        want.extend(["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"].map(String::from));
        assert_eq!(
            got,
            paths(&want.iter().map(String::as_str).collect::<Vec<_>>())
        );
    }

    /// `nvrtcGetSupportedArchs` of NVRTC 12.9 (the pip wheel).
    const CUDA_12_9: [i32; 19] = [
        50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90, 100, 101, 103, 120, 121,
    ];
    /// A CUDA 12.0 list: nothing after Hopper.
    const CUDA_12_0: [i32; 14] = [50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90];
    /// A CUDA 13 list: Maxwell, Pascal and Volta dropped; Thor as 11.0.
    const CUDA_13: [i32; 11] = [75, 80, 86, 87, 89, 90, 100, 103, 110, 120, 121];

    fn target(cc: (i32, i32), supported: &[i32]) -> String {
        compile_target(cc, supported).unwrap_or_else(|e| panic!("{cc:?}: {e}"))
    }

    #[test]
    fn the_device_itself_is_compiled_for_when_listed() {
        for list in [&CUDA_12_9[..], &CUDA_12_0, &CUDA_13] {
            assert_eq!(target((8, 0), list), "sm_80");
            assert_eq!(target((9, 0), list), "sm_90");
            assert_eq!(target((7, 5), list), "sm_75");
        }
        assert_eq!(target((7, 0), &CUDA_12_9), "sm_70");
        assert_eq!(target((10, 0), &CUDA_12_9), "sm_100");
        assert_eq!(target((12, 0), &CUDA_13), "sm_120");
        assert_eq!(target((11, 0), &CUDA_13), "sm_110");
    }

    #[test]
    fn a_minor_this_nvrtc_lacks_takes_the_cubin_of_an_earlier_minor() {
        assert_eq!(target((8, 9), &[80, 86, 90]), "sm_86");
        assert_eq!(target((12, 1), &[90, 100, 120]), "sm_120");
        assert_eq!(target((10, 3), &[90, 100, 120]), "sm_100");
    }

    #[test]
    fn a_device_newer_than_nvrtc_gets_ptx_for_the_newest_architecture_below_it() {
        assert_eq!(target((10, 0), &CUDA_12_0), "compute_90");
        assert_eq!(target((10, 3), &CUDA_12_0), "compute_90");
        assert_eq!(target((12, 0), &CUDA_12_0), "compute_90");
        // Thor is 11.0 under CUDA 13; CUDA 12.9 knew it as 10.1.
        assert_eq!(target((11, 0), &CUDA_12_9), "compute_103");
        assert_eq!(target((13, 0), &CUDA_13), "compute_121");
    }

    #[test]
    fn a_device_older_than_every_listed_architecture_is_an_error() {
        for cc in [(6, 1), (7, 0), (7, 2), (5, 0)] {
            let err = compile_target(cc, &CUDA_13).unwrap_err();
            assert!(matches!(err, KernelError::Unavailable(_)), "{err:?}");
            assert!(
                err.to_string()
                    .contains(&format!("compute capability {}.{}", cc.0, cc.1)),
                "{err}"
            );
        }
        assert_eq!(target((6, 1), &CUDA_12_9), "sm_61");
        assert!(compile_target((9, 0), &[]).is_err());
    }
}

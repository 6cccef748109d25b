//! Finding NVRTC and compiling the `.cu` sources with it.
//!
//! cudarc loads `libnvrtc` by name on first use and panics if no candidate
//! name loads, so nothing here calls into NVRTC before [`ensure_loaded`] has
//! found it. The library is often not on the loader's search path: NVIDIA's
//! pip wheel puts it inside a Python environment, and `LD_LIBRARY_PATH` is
//! read once, when the process starts, so setting it later has no effect.
//! Instead the library is opened here by its full path and kept open; the
//! dynamic loader then answers cudarc's later request for `libnvrtc.so.12`
//! with the copy already loaded, because it matches loaded objects by their
//! soname before searching the file system.

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cudarc::nvrtc::sys;

use crate::error::KernelError;

/// A CUDA source file, compiled as one module.
#[derive(Clone, Copy, Debug)]
pub struct Source {
    pub name: &'static str,
    pub text: &'static str,
}

/// Headers the sources include; handed to NVRTC by name, since it is given
/// no include directories.
const HEADERS: [Source; 2] = [
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

/// Every kernel source, one module each.
pub const SOURCES: [Source; 4] = [GEMM, CONV, POOL, ELEMENTWISE];

/// The environment variable naming the NVRTC library (or its directory)
/// when it is neither on the loader's search path nor in the project's
/// Python environment.
pub const NVRTC_ENV: &str = "MPINFER_NVRTC";

const SONAME: &str = "libnvrtc.so.12";

/// Where NVRTC was found, once it has been; libraries opened by path, kept
/// open for the life of the process.
struct Loaded {
    found: Option<String>,
    libraries: Vec<libloading::Library>,
}

static LOADED: Mutex<Loaded> = Mutex::new(Loaded {
    found: None,
    libraries: Vec::new(),
});

fn lock() -> std::sync::MutexGuard<'static, Loaded> {
    LOADED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Opens the NVRTC library at `path` (a file, or a directory holding
/// `libnvrtc.so.12`) and keeps it loaded, so that the kernels compile with
/// it.
pub fn load_library(path: &Path) -> Result<(), KernelError> {
    let file = if path.is_dir() {
        path.join(SONAME)
    } else {
        path.to_path_buf()
    };
    // SAFETY: NVRTC's initialisers only set up its own state.
    let lib =
        unsafe { libloading::Library::new(&file) }.map_err(|source| KernelError::LoadNvrtc {
            path: file.clone(),
            source,
        })?;
    let mut loaded = lock();
    loaded.libraries.push(lib);
    // Only a library cudarc will then resolve counts as found.
    // SAFETY: probing opens and closes candidate libraries by name.
    if unsafe { sys::is_culib_present() } {
        loaded.found = Some(file.display().to_string());
        Ok(())
    } else {
        Err(KernelError::Unavailable(format!(
            "loaded {} but it is not an NVRTC library cudarc can use (its soname should be {SONAME})",
            file.display()
        )))
    }
}

/// Makes sure NVRTC is loaded, trying in order: a library already loaded,
/// the loader's own search (`LD_LIBRARY_PATH`, the system's libraries),
/// `$MPINFER_NVRTC`, and the pip wheel in a `.venv` found above the current
/// directory or above the running executable. Returns where it was found.
pub fn ensure_loaded() -> Result<String, KernelError> {
    if let Some(found) = lock().found.clone() {
        return Ok(found);
    }
    // SAFETY: probing opens and closes candidate libraries by name.
    if unsafe { sys::is_culib_present() } {
        let found = "the dynamic loader's search path".to_string();
        lock().found = Some(found.clone());
        return Ok(found);
    }
    let mut tried = Vec::new();
    if let Some(path) = std::env::var_os(NVRTC_ENV) {
        let path = PathBuf::from(path);
        match load_library(&path) {
            Ok(()) => return Ok(path.display().to_string()),
            Err(e) => tried.push(e.chain()),
        }
    }
    for dir in venv_candidates() {
        if dir.join(SONAME).is_file() && load_library(&dir).is_ok() {
            return Ok(dir.join(SONAME).display().to_string());
        }
    }
    let mut why = format!(
        "no NVRTC library ({SONAME}) found: add its directory to LD_LIBRARY_PATH, set \
         {NVRTC_ENV} to it, or install the nvidia-cuda-nvrtc-cu12 wheel into .venv \
         (scripts/setup.sh)"
    );
    for t in tried {
        why.push_str("; ");
        why.push_str(&t);
    }
    Err(KernelError::Unavailable(why))
}

/// `<root>/.venv/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib` for every
/// ancestor of the current directory and of the executable.
fn venv_candidates() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    let mut dirs = Vec::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root.join(".venv/lib")) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("python3") {
                let dir = entry.path().join("site-packages/nvidia/cuda_nvrtc/lib");
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
        }
    }
    dirs
}

fn check(what: &str, r: sys::nvrtcResult) -> Result<(), KernelError> {
    r.result().map_err(|source| KernelError::Nvrtc {
        what: what.to_string(),
        source,
    })
}

/// NVRTC's version, `(major, minor)`.
pub fn version() -> Result<(i32, i32), KernelError> {
    ensure_loaded()?;
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: NVRTC is loaded; both pointers are valid.
    check("version", unsafe {
        sys::nvrtcVersion(&mut major, &mut minor)
    })?;
    Ok((major, minor))
}

/// The real architectures (`sm_XY` as `XY`) this NVRTC can compile for.
pub fn supported_architectures() -> Result<Vec<i32>, KernelError> {
    ensure_loaded()?;
    let mut n: c_int = 0;
    // SAFETY: NVRTC is loaded; the buffer has the size NVRTC reported.
    unsafe {
        check("architectures", sys::nvrtcGetNumSupportedArchs(&mut n))?;
        let mut archs = vec![0 as c_int; n.max(0) as usize];
        check(
            "architectures",
            sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()),
        )?;
        Ok(archs)
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

/// Destroys the program however compilation ends.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: the program was created by nvrtcCreateProgram and is
        // destroyed once; a failure leaves nothing to clean up.
        unsafe {
            sys::nvrtcDestroyProgram(&mut self.0);
        }
    }
}

/// Compiles `source` for `arch`: `compute_XY` gives PTX, `sm_XY` a cubin.
/// On failure the error carries NVRTC's log.
pub fn compile(
    source: &Source,
    arch: &str,
    extra_options: &[&str],
) -> Result<Compiled, KernelError> {
    ensure_loaded()?;
    let cstring = |s: &str| {
        CString::new(s).map_err(|_| KernelError::Invalid {
            op: "NVRTC",
            what: format!("NUL byte in {s:?}"),
        })
    };
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
    let mut options = vec![
        format!("--gpu-architecture={arch}"),
        "-std=c++17".to_string(),
    ];
    options.extend(extra_options.iter().map(|o| o.to_string()));
    let options = options
        .iter()
        .map(|o| cstring(o))
        .collect::<Result<Vec<_>, _>>()?;
    let option_ptrs: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();
    let cubin = arch.starts_with("sm_");

    // SAFETY: NVRTC is loaded; every pointer handed over points into a
    // CString or Vec that outlives the call using it, and output buffers
    // have the sizes NVRTC reported.
    unsafe {
        let mut raw = std::ptr::null_mut();
        check(
            "create program",
            sys::nvrtcCreateProgram(
                &mut raw,
                text.as_ptr(),
                name.as_ptr(),
                HEADERS.len() as c_int,
                text_ptrs.as_ptr(),
                name_ptrs.as_ptr(),
            ),
        )?;
        let program = Program(raw);
        let result =
            sys::nvrtcCompileProgram(program.0, option_ptrs.len() as c_int, option_ptrs.as_ptr());
        let mut log_len = 0usize;
        check("log", sys::nvrtcGetProgramLogSize(program.0, &mut log_len))?;
        let mut log = vec![0u8; log_len.max(1)];
        check(
            "log",
            sys::nvrtcGetProgramLog(program.0, log.as_mut_ptr().cast()),
        )?;
        let log = CStr::from_bytes_until_nul(&log)
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Err(source_error) = result.result() {
            return Err(KernelError::Compile {
                file: source.name,
                arch: arch.to_string(),
                log,
                source: source_error,
            });
        }
        let mut len = 0usize;
        let mut image;
        if cubin {
            check("cubin size", sys::nvrtcGetCUBINSize(program.0, &mut len))?;
            image = vec![0u8; len];
            check(
                "cubin",
                sys::nvrtcGetCUBIN(program.0, image.as_mut_ptr().cast()),
            )?;
        } else {
            check("PTX size", sys::nvrtcGetPTXSize(program.0, &mut len))?;
            image = vec![0u8; len];
            check(
                "PTX",
                sys::nvrtcGetPTX(program.0, image.as_mut_ptr().cast()),
            )?;
        }
        Ok(Compiled { image, log })
    }
}

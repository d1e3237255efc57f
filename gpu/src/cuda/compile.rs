//! NVRTC compilation with a per-process cache keyed by device and source hash.

use super::driver::ensure_nvrtc;
use crate::error::{CompileError, RingError};
use crate::kernel::numbered;
use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};
use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::ffi::CString;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

type Cache = Mutex<HashMap<(usize, u64), Arc<CString>>>;

/// PTX of `source` for device `ordinal` (compute capability `cc`), compiled once per process.
pub(crate) fn ptx(
    kernel: &str,
    source: &str,
    ordinal: usize,
    cc: (i32, i32),
) -> Result<Arc<CString>, RingError> {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let mut hasher = DefaultHasher::new();
    source.hash(&mut hasher);
    cc.hash(&mut hasher);
    let key = (ordinal, hasher.finish());
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(hit.clone());
    }
    ensure_nvrtc()?;
    let arch: &'static str = Box::leak(format!("compute_{}{}", cc.0, cc.1).into_boxed_str());
    let opts = CompileOptions {
        arch: Some(arch),
        name: Some(format!("{kernel}.cu")),
        options: vec!["-std=c++17".into()],
        ..Default::default()
    };
    let ptx = compile_ptx_with_opts(source, opts).map_err(|e| {
        let log = match &e {
            cudarc::nvrtc::CompileError::CompileError { log, .. } => {
                log.to_string_lossy().into_owned()
            }
            other => format!("{other:?}"),
        };
        RingError::Compile(CompileError::Nvrtc {
            kernel: kernel.to_owned(),
            log,
            numbered_source: numbered(source),
        })
    })?;
    let text = CString::new(ptx.to_src()).expect("PTX has no NUL");
    let text = Arc::new(text);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, text.clone());
    Ok(text)
}

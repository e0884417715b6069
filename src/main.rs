//! The `sidekick` binary: everything happens in the library crate.

fn main() -> std::process::ExitCode {
    #[cfg(target_env = "musl")]
    allocator::configure();
    sidekick::main()
}

/// The static musl build's allocator. musl's own malloc is slow on the many
/// small allocations of a large load (a 10,000-key etcd `--onetime` took
/// 42-46 ms with it, 28-40 ms with mimalloc); see docs/decisions.md.
#[cfg(target_env = "musl")]
mod allocator {
    #[global_allocator]
    static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

    /// `mi_option_purge_delay` in mimalloc.h (the same position in v2 and v3;
    /// look again when updating mimalloc).
    const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

    extern "C" {
        /// `mi_option_set` from mimalloc.h, linked through `libmimalloc-sys`.
        fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    }

    /// Gives freed memory back at once instead of after mimalloc's default
    /// second: a 10,000-key run peaks at 11 MB instead of 17 MB, with fewer
    /// `madvise` calls, not more.
    pub fn configure() {
        // SAFETY: sets one integer option, before any thread but this one
        // exists; mimalloc's options are plain words read on use.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

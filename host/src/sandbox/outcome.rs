//! How a call ended: its result classified for the engine (a plugin error,
//! a trap, a broken limit), its cost recorded, broken limits audited.

use super::bindings::WitError;
use super::plugin::Plugin;
use super::state::HostState;
use super::types::{CallCost, CallError};
use crate::store::ErrorKind;
use std::sync::atomic::Ordering::Relaxed;
use wasmtime::Trap;

/// What a timed call produced: a timeout, a trap, a plugin error or a value.
pub(super) type Timed<T> =
    Result<wasmtime::Result<Result<T, WitError>>, tokio::time::error::Elapsed>;

pub(super) fn finish<T>(
    plugin: &Plugin,
    store: &mut wasmtime::Store<HostState>,
    result: Timed<T>,
) -> Result<T, CallError> {
    let outcome = finish_inner(plugin, store, result);
    let stats = &plugin.stats;
    stats.calls.fetch_add(1, Relaxed);
    if outcome.is_err() {
        stats.failures.fetch_add(1, Relaxed);
    }
    let elapsed = store.data().started.elapsed();
    stats.duration.observe(elapsed);
    let memory = store.data().limits.peak as u64;
    stats.memory_peak.fetch_max(memory, Relaxed);
    let fuel = match store.get_fuel() {
        Ok(left) => plugin.limits.fuel.unwrap_or(u64::MAX).saturating_sub(left),
        Err(_) => 0,
    };
    stats.fuel.fetch_add(fuel, Relaxed);
    store.data_mut().cost = CallCost {
        duration_us: elapsed.as_micros() as u64,
        fuel,
        memory_bytes: memory,
    };
    outcome
}

fn finish_inner<T>(
    plugin: &Plugin,
    store: &mut wasmtime::Store<HostState>,
    result: Timed<T>,
) -> Result<T, CallError> {
    let stdio = store.data_mut().drain_stdio();
    let timeout_ms = plugin.limits.timeout.as_millis();
    let broke = |store: &wasmtime::Store<HostState>, e: CallError| {
        store.data().hooks.denier.limit(&e.message);
        Err(e)
    };
    if let Err(over) = stdio {
        return broke(store, CallError::new(ErrorKind::Fatal, over.0));
    }
    match result {
        Err(_) => broke(
            store,
            CallError::new(
                ErrorKind::Transient,
                format!(
                    "plugin {} did not finish within its {timeout_ms} ms time limit",
                    plugin.name
                ),
            ),
        ),
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(e))) => {
            let mut e = CallError::from(e);
            e.message = bounded_message(&e.message);
            Err(e)
        }
        Ok(Err(trap)) => {
            let (e, limit) = classify_trap(plugin, trap, store.data().last_stderr.as_deref());
            if limit { broke(store, e) } else { Err(e) }
        }
    }
}

/// Longest error message kept from a plugin, in bytes.
pub const MAX_ERROR_MESSAGE: usize = 4096;

/// A plugin's error message, masked and cut to [`MAX_ERROR_MESSAGE`].
pub(super) fn bounded_message(m: &str) -> String {
    let mut m = crate::redact::mask(m).into_owned();
    if m.len() > MAX_ERROR_MESSAGE {
        let mut cut = MAX_ERROR_MESSAGE;
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
        m.push_str(" …(cut)");
    }
    m
}

pub(super) fn check_output(
    plugin: &Plugin,
    store: &wasmtime::Store<HostState>,
    size: usize,
) -> Result<(), CallError> {
    if size > plugin.limits.output_bytes {
        let message = format!(
            "plugin {} returned {size} bytes, over its output cap of {} KiB; the output was dropped",
            plugin.name,
            plugin.limits.output_bytes / 1024
        );
        tracing::warn!(plugin = %plugin.name, "{message}");
        store.data().hooks.denier.limit(&message);
        return Err(CallError::new(ErrorKind::Fatal, message));
    }
    Ok(())
}

/// The error of a trapped call, and whether it broke one of the plugin's limits.
fn classify_trap(
    plugin: &Plugin,
    e: wasmtime::Error,
    last_stderr: Option<&str>,
) -> (CallError, bool) {
    let name = &plugin.name;
    let text = format!("{e:#}");
    if let Some(over) = e.downcast_ref::<super::state::LimitExceeded>() {
        return (CallError::new(ErrorKind::Fatal, over.0.clone()), true);
    }
    let limit = |e: CallError| (e, true);
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => limit(CallError::new(
            ErrorKind::Transient,
            format!(
                "plugin {name} ran past its {} ms time limit and was stopped",
                plugin.limits.timeout.as_millis()
            ),
        )),
        Some(Trap::OutOfFuel) => limit(CallError::new(
            ErrorKind::Fatal,
            format!(
                "plugin {name} used up its fuel budget of {} and was stopped",
                plugin.limits.fuel.unwrap_or(0)
            ),
        )),
        Some(Trap::StackOverflow) => limit(CallError::new(
            ErrorKind::Fatal,
            format!("plugin {name} overflowed its stack and was stopped"),
        )),
        // A Rust plugin keeps its stack in linear memory: deep recursion runs
        // off the bottom of it.
        Some(Trap::MemoryOutOfBounds) => limit(CallError::new(
            ErrorKind::Fatal,
            format!(
                "plugin {name} accessed memory out of bounds (usually a stack overflow from deep recursion) and was stopped"
            ),
        )),
        _ if text.contains("growing memory") => limit(CallError::new(
            ErrorKind::Fatal,
            format!(
                "plugin {name} tried to use more than its memory cap of {} MiB and was stopped",
                plugin.limits.memory_bytes / (1024 * 1024)
            ),
        )),
        _ => {
            let cause = e.root_cause().to_string();
            let said = last_stderr
                .map(|l| format!("; it said: {}", bounded_message(l)))
                .unwrap_or_default();
            let trace = e
                .downcast_ref::<wasmtime::WasmBacktrace>()
                .map(backtrace)
                .unwrap_or_default();
            (
                CallError::new(
                    ErrorKind::Fatal,
                    format!(
                        "plugin {name} crashed ({}){said}{trace}",
                        bounded_message(&cause)
                    ),
                ),
                false,
            )
        }
    }
}

/// The plugin's own frames of a trap's backtrace, innermost first: each
/// function's name, with its source file and line when the plugin was
/// built with debug info (`weft plugin build` without `--release`). Frames
/// of the panic machinery and the standard library are left out.
fn backtrace(trace: &wasmtime::WasmBacktrace) -> String {
    let mut lines = Vec::new();
    for frame in trace.frames() {
        let symbols = frame.symbols();
        let demangled = |n: &str| format!("{:#}", rustc_demangle::demangle(n));
        let named: Vec<(String, Option<String>)> = if symbols.is_empty() {
            frame
                .func_name()
                .map(|n| vec![(demangled(n), None)])
                .unwrap_or_default()
        } else {
            symbols
                .iter()
                .filter_map(|s| {
                    let name = demangled(s.name()?);
                    let at = match (s.file(), s.line()) {
                        (Some(f), Some(l)) => Some(format!("{f}:{l}")),
                        _ => None,
                    };
                    Some((name, at))
                })
                .collect()
        };
        for (name, at) in named {
            let noise = [
                "core::panicking",
                "std::panicking",
                "std::process::abort",
                "std::rt",
                "__rust",
                "rust_panic",
                "std::sys",
                "core::result::unwrap_failed",
                "core::option::",
            ];
            if name == "abort" || noise.iter().any(|n| name.contains(n)) {
                continue;
            }
            lines.push(match at {
                Some(at) => format!("  at {name} ({at})"),
                None => format!("  at {name}"),
            });
            if lines.len() == 8 {
                break;
            }
        }
        if lines.len() == 8 {
            break;
        }
    }
    if lines.is_empty() {
        String::new()
    } else {
        format!("\nwasm backtrace:\n{}", lines.join("\n"))
    }
}

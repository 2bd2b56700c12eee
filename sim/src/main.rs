//! `vioblk-sim`: runs the vioblk driver on a simulated virtio-blk disk (see `vioblk_sim::cli`).
#![forbid(unsafe_code)]

use vioblk_sim::cli::run_cli;
use vioblk_sim::disk::{Backend, RamBackend};
use vioblk_sim::driver::DriverBackend;

fn main() {
    let argv: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // The targets `--target` chooses from; the first is the default: the real driver on the
    // user-mode Storport over the virtio-blk model. `ram` is the driverless double.
    let backends: &[(&str, &dyn Backend)] = &[("driver", &DriverBackend), ("ram", &RamBackend)];
    // Unlocked handles: the progress bar writes to stderr from its own thread while this runs.
    let code = run_cli(
        &argv,
        backends,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    );
    std::process::exit(code);
}

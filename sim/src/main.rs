//! `vioblk-sim`: runs the vioblk driver on a simulated virtio-blk disk (see `vioblk_sim::cli`).

use vioblk_sim::cli::{Backend, RamBackend, run_cli};

fn main() {
    let argv: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // The targets `--target` chooses from; the first is the default. The storport-sim backend
    // that runs the real driver goes first in this list, e.g. `("driver", &DriverBackend)`.
    let backends: &[(&str, &dyn Backend)] = &[("ram", &RamBackend)];
    let code = run_cli(
        &argv,
        backends,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    std::process::exit(code);
}

//! The one `bindgen!` for the `attune:sensor` package. It is generated for the
//! `source-runtime` world, a superset of `sensor`: every sensor component is driven through
//! the `guest` export, and the shared language runtimes additionally through `source-loader`.

wasmtime::component::bindgen!({
    world: "source-runtime",
    path: "../wit",
    imports: {
        // HTTP waits on the network, and the filesystem calls on a thread of their own, both
        // bounded by the poll's deadline; everything else answers from memory.
        "attune:sensor/http.send": async,
        "attune:sensor/fs.list-dir": async,
        "attune:sensor/fs.read-file": async,
        default: trappable,
    },
    exports: { default: async },
});

pub use attune::sensor::{clock, fs, http, instances, log, state, types};
pub use exports::attune::sensor::{guest, source_loader};

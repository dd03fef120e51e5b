//! What the app hands down to the code that needs it: where files go
//! ([`Paths`]), how long work reports progress ([`Progress`]), and the
//! stores of built things ([`BaseModels`], [`Adapters`]), each handed its
//! folder. Nothing below the app looks any of them up for itself.

mod adapters;
mod models;
mod paths;
mod progress;
pub mod specialist;

pub use adapters::{ADAPTER_FILE, Adapters, STATS_FILE, StoredAdapter};
pub use models::{BaseModels, MANIFEST_FILE, StoreError, WEIGHTS_FILE};
pub use paths::Paths;
pub use progress::{Progress, Silent, Task};

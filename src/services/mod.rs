//! What the app hands down to the code that needs it: where files go
//! ([`Paths`]) and how long work reports progress ([`Progress`]). Nothing
//! below the app looks either up for itself.

mod paths;
mod progress;

pub use paths::Paths;
pub use progress::{Progress, Silent, Task};

//! The JSON header a bets file keeps in its safetensors metadata under one
//! key (the packed ternary base, the int8 adapter): written beside the
//! tensors and read back before them, so a file of another kind is refused
//! by name.

use std::collections::HashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{EngineError, Result};

/// The safetensors metadata holding `header` as JSON under `key`.
pub(crate) fn metadata<T: Serialize>(key: &str, header: &T) -> HashMap<String, String> {
    HashMap::from([(key.to_string(), serde_json::to_string(header).expect("a header serialises"))])
}

/// The parsed file and its header under `key`; errors are `Malformed` with
/// `what` (the file's kind) and say what is wrong.
pub(crate) fn read<'a, T: DeserializeOwned>(
    bytes: &'a [u8],
    key: &str,
    what: &str,
) -> Result<(safetensors::SafeTensors<'a>, T)> {
    let malformed = |detail: String| EngineError::Malformed { what: what.into(), detail };
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| malformed(e.to_string()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| malformed(e.to_string()))?;
    let json =
        meta.metadata().as_ref().and_then(|m| m.get(key)).ok_or_else(|| malformed(format!("no `{key}` header")))?;
    let header = serde_json::from_str(json).map_err(|e| malformed(format!("header: {e}")))?;
    Ok((st, header))
}

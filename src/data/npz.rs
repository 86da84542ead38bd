//! NumPy `.npz` archives (`np.savez` / `np.savez_compressed`): a zip of `.npy` arrays.
//!
//! The arrays are `x_train`, `y_train` and, optionally, `x_test`, `y_test` (Keras' names);
//! each is read as [`super::npy`] reads a file.

use std::io::Read;
use std::path::Path;

use super::{npy, Splits};
use crate::{Error, Result};

/// The array names read, in the order train features, train labels, test features, test labels.
pub const KEYS: [&str; 4] = ["x_train", "y_train", "x_test", "y_test"];

/// Read `path`: the training split from `x_train`/`y_train`, the test split from
/// `x_test`/`y_test` when the archive has both.
pub fn load(path: &Path) -> Result<Splits> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| Error::bad_data(path, format!("not a .npz (zip) archive: {e}")))?;
    let names: Vec<String> = zip
        .file_names()
        .map(|n| n.map(|n| n.into_owned()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::bad_data(path, format!("unreadable member name: {e}")))?;
    let mut get = |key: &str| -> Result<Option<npy::Npy>> {
        let member = format!("{key}.npy");
        if !names.contains(&member) {
            return Ok(None);
        }
        let at = path.join(&member);
        let mut f = zip
            .by_name(&member)
            .map_err(|e| Error::bad_data(&at, e.to_string()))?;
        if f.size() > npy::MAX_BYTES {
            return Err(Error::bad_data(
                &at,
                format!("{} bytes is too large", f.size()),
            ));
        }
        let mut bytes = Vec::with_capacity(f.size() as usize);
        f.read_to_end(&mut bytes)
            .map_err(|e| Error::bad_data(&at, format!("cannot decompress: {e}")))?;
        npy::parse(&bytes, &at).map(Some)
    };
    let mut arrays = Vec::new();
    for key in KEYS {
        arrays.push(get(key)?);
    }
    let [xtr, ytr, xte, yte]: [Option<npy::Npy>; 4] = arrays.try_into().expect("four keys");
    let missing = |k: &str| {
        let have: Vec<&str> = names.iter().map(|n| n.trim_end_matches(".npy")).collect();
        Error::bad_data(
            path,
            format!(
                "has no `{k}` array (it holds {}); a .npz for wgtrain holds x_train, y_train and \
                 optionally x_test, y_test",
                if have.is_empty() {
                    "nothing".to_string()
                } else {
                    have.join(", ")
                }
            ),
        )
    };
    let x = xtr.ok_or_else(|| missing("x_train"))?;
    let y = ytr.ok_or_else(|| missing("y_train"))?;
    let at = |k: &str| path.join(format!("{k}.npy"));
    let train = npy::dataset(x, &at("x_train"), y, &at("y_train"))?;
    let test = match (xte, yte) {
        (Some(x), Some(y)) => Some(npy::dataset(x, &at("x_test"), y, &at("y_test"))?),
        (None, None) => None,
        (Some(_), None) => return Err(missing("y_test")),
        (None, Some(_)) => return Err(missing("x_test")),
    };
    Splits::new(train, test, Vec::new(), path)
}

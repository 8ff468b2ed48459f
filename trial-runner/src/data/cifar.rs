//! Readers (and, for the synthetic generator, writers) of the four CIFAR layouts.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::pickle::{self, NdArrayU8, Value};
use super::{CifarFormat, DataError, Dataset, Splits, IMAGE_BYTES};

/// CIFAR-10 splits its training set over this many batch files.
const CIFAR10_BATCHES: usize = 5;

/// File names of one format.
struct Layout {
    train: Vec<String>,
    test: &'static str,
    /// Class names: a text file (one per line) or a pickled dict; optional.
    names: &'static str,
}

fn layout(format: CifarFormat) -> Layout {
    let batches = |suffix: &str| {
        (1..=CIFAR10_BATCHES)
            .map(|i| format!("data_batch_{i}{suffix}"))
            .collect()
    };
    match format {
        CifarFormat::Cifar100Bin => Layout {
            train: vec!["train.bin".into()],
            test: "test.bin",
            names: "fine_label_names.txt",
        },
        CifarFormat::Cifar10Bin => Layout {
            train: batches(".bin"),
            test: "test_batch.bin",
            names: "batches.meta.txt",
        },
        CifarFormat::Cifar100Pickle => Layout {
            train: vec!["train".into()],
            test: "test",
            names: "meta",
        },
        CifarFormat::Cifar10Pickle => Layout {
            train: batches(""),
            test: "test_batch",
            names: "batches.meta",
        },
    }
}

impl Layout {
    fn required(&self) -> impl Iterator<Item = &str> {
        self.train
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(self.test))
    }

    fn missing(&self, dir: &Path) -> Vec<&str> {
        self.required()
            .filter(|file| !dir.join(file).is_file())
            .collect()
    }
}

/// The directory that holds `format`'s files: `dir` itself, or the subfolder the
/// official archive extracts to, so that both the archive's folder and its parent work.
fn resolve(dir: &Path, format: CifarFormat) -> Result<PathBuf, DataError> {
    let layout = layout(format);
    let error = |reason: String| DataError::MissingData {
        dir: dir.to_owned(),
        format,
        reason,
    };
    if !dir.exists() {
        return Err(error("the directory does not exist".into()));
    }
    if !dir.is_dir() {
        return Err(error("it is not a directory".into()));
    }
    let missing = layout.missing(dir);
    if missing.is_empty() {
        return Ok(dir.to_owned());
    }
    let sub = dir.join(format.subfolder());
    if sub.is_dir() && layout.missing(&sub).is_empty() {
        return Ok(sub);
    }
    Err(error(format!("missing {}", missing.join(", "))))
}

/// The format of the dataset in `dir` (or in its standard subfolder), trying
/// [`CifarFormat::ALL`] in order; `None` if no format's files are all there.
pub fn detect(dir: &Path) -> Option<CifarFormat> {
    CifarFormat::ALL
        .into_iter()
        .find(|&format| resolve(dir, format).is_ok())
}

/// Loads the train and test splits of `format` from `dir` or its standard subfolder
/// (e.g. `cifar-100-binary/`). Labels are validated against the class count.
pub fn load(dir: &Path, format: CifarFormat) -> Result<Splits, DataError> {
    let root = resolve(dir, format)?;
    let layout = layout(format);
    let names_path = root.join(layout.names);
    let class_names = if names_path.is_file() {
        read_names(&names_path, format)?
    } else {
        Vec::new()
    };
    if class_names.len() > format.classes() {
        return Err(DataError::Malformed {
            file: names_path,
            reason: format!(
                "lists {} class names, but {format} has at most {}",
                class_names.len(),
                format.classes()
            ),
        });
    }
    // A synthetic dataset may use fewer classes than the real one; its names say so.
    let classes = if class_names.is_empty() {
        format.classes()
    } else {
        class_names.len()
    };
    let read_split = |files: &[&str]| -> Result<Dataset, DataError> {
        let mut split = Dataset {
            images: Vec::new(),
            labels: Vec::new(),
            classes,
            class_names: class_names.clone(),
        };
        for file in files {
            let path = root.join(file);
            match format {
                CifarFormat::Cifar100Bin | CifarFormat::Cifar10Bin => {
                    read_bin(&path, format, &mut split)?
                }
                CifarFormat::Cifar100Pickle | CifarFormat::Cifar10Pickle => {
                    read_pickle_batch(&path, format, &mut split)?
                }
            }
        }
        Ok(split)
    };
    let train_files: Vec<&str> = layout.train.iter().map(String::as_str).collect();
    Ok(Splits {
        train: read_split(&train_files)?,
        test: read_split(&[layout.test])?,
    })
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_owned(),
        source,
    }
}

fn check_label(file: &Path, index: usize, label: i64, classes: usize) -> Result<u16, DataError> {
    match usize::try_from(label) {
        Ok(l) if l < classes => Ok(l as u16),
        _ => Err(DataError::LabelOutOfRange {
            file: file.to_owned(),
            index,
            label,
            classes,
        }),
    }
}

/// Record size and offset of the label we use (CIFAR-100's fine label follows the
/// coarse one).
fn record_layout(format: CifarFormat) -> (usize, usize) {
    match format {
        CifarFormat::Cifar100Bin => (IMAGE_BYTES + 2, 1),
        _ => (IMAGE_BYTES + 1, 0),
    }
}

/// Appends the records of one binary file to `split`.
fn read_bin(path: &Path, format: CifarFormat, split: &mut Dataset) -> Result<(), DataError> {
    let (record, label_at) = record_layout(format);
    let file = File::open(path).map_err(io_error(path))?;
    let size = file.metadata().map_err(io_error(path))?.len();
    if size % record as u64 != 0 {
        return Err(DataError::BadSize {
            file: path.to_owned(),
            size,
            record,
            format,
        });
    }
    let n = (size / record as u64) as usize;
    split.images.reserve(n * IMAGE_BYTES);
    split.labels.reserve(n);
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut buf = vec![0; record];
    for index in 0..n {
        reader.read_exact(&mut buf).map_err(io_error(path))?;
        let label = check_label(path, index, buf[label_at].into(), split.classes)?;
        split.labels.push(label);
        split.images.extend_from_slice(&buf[record - IMAGE_BYTES..]);
    }
    Ok(())
}

fn read_pickle(path: &Path) -> Result<Value, DataError> {
    let bytes = fs::read(path).map_err(io_error(path))?;
    pickle::read(&bytes).map_err(|source| DataError::Pickle {
        file: path.to_owned(),
        source,
    })
}

fn malformed(path: &Path, reason: String) -> DataError {
    DataError::Malformed {
        file: path.to_owned(),
        reason,
    }
}

/// Takes `dict[key]`, which must be a list.
fn take_list(path: &Path, dict: &mut Value, key: &str) -> Result<Vec<Value>, DataError> {
    match dict.remove(key) {
        Some(Value::List(items)) => Ok(items),
        Some(other) => Err(malformed(
            path,
            format!("b'{key}' is a {}, expected a list", other.kind()),
        )),
        None => Err(malformed(
            path,
            format!("no b'{key}' entry in the pickled {}", dict.kind()),
        )),
    }
}

/// Key of the labels we use in a pickled batch.
fn label_key(format: CifarFormat) -> &'static str {
    if format == CifarFormat::Cifar100Pickle {
        "fine_labels"
    } else {
        "labels"
    }
}

/// Appends one pickled batch (`{b'data': (N, 3072) uint8 array, b'labels': [...]}`).
fn read_pickle_batch(
    path: &Path,
    format: CifarFormat,
    split: &mut Dataset,
) -> Result<(), DataError> {
    let mut dict = read_pickle(path)?;
    let labels = take_list(path, &mut dict, label_key(format))?;
    let data = dict
        .remove("data")
        .ok_or_else(|| malformed(path, "no b'data' entry".into()))?;
    let array = NdArrayU8::from_value(data).map_err(|source| DataError::Pickle {
        file: path.to_owned(),
        source,
    })?;
    if array.shape.first() != Some(&labels.len()) || array.data.len() != labels.len() * IMAGE_BYTES
    {
        return Err(malformed(
            path,
            format!(
                "b'data' has shape {:?}, expected ({}, {IMAGE_BYTES}) for {} labels",
                array.shape,
                labels.len(),
                labels.len()
            ),
        ));
    }
    for (index, label) in labels.iter().enumerate() {
        let &Value::Int(label) = label else {
            return Err(malformed(
                path,
                format!("label {index} is a {}, expected an int", label.kind()),
            ));
        };
        split
            .labels
            .push(check_label(path, index, label, split.classes)?);
    }
    if split.images.is_empty() {
        split.images = array.data;
    } else {
        split.images.extend_from_slice(&array.data);
    }
    Ok(())
}

/// Class names from `fine_label_names.txt` / `batches.meta.txt` (one per line, blank
/// lines ignored) or the pickled `meta` / `batches.meta` dict.
fn read_names(path: &Path, format: CifarFormat) -> Result<Vec<String>, DataError> {
    match format {
        CifarFormat::Cifar100Bin | CifarFormat::Cifar10Bin => {
            let text = fs::read(path).map_err(io_error(path))?;
            Ok(String::from_utf8_lossy(&text)
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(str::to_owned)
                .collect())
        }
        CifarFormat::Cifar100Pickle | CifarFormat::Cifar10Pickle => {
            let key = if format == CifarFormat::Cifar100Pickle {
                "fine_label_names"
            } else {
                "label_names"
            };
            let mut meta = read_pickle(path)?;
            take_list(path, &mut meta, key)?
                .iter()
                .map(|name| {
                    name.as_text()
                        .map(|t| String::from_utf8_lossy(t).into_owned())
                        .ok_or_else(|| {
                            malformed(path, format!("a class name is a {}", name.kind()))
                        })
                })
                .collect()
        }
    }
}

/// `parts` consecutive ranges covering `0..n` as evenly as possible.
fn split_even(n: usize, parts: usize) -> impl Iterator<Item = Range<usize>> {
    (0..parts).map(move |k| k * n / parts..(k + 1) * n / parts)
}

/// CIFAR-100 also stores a coarse label; [`Dataset`] does not keep it, so the writer
/// uses `fine / 5` (20 superclasses of 5 classes, as in the real dataset's shape).
fn coarse(label: u16) -> u16 {
    label / 5
}

/// Writes `splits` in exactly the files and layout of `format` into `dir` (not into a
/// subfolder): the training set spread evenly over CIFAR-10's 5 batches, and the class
/// names (plus `coarse_label_names.txt` / coarse names for CIFAR-100).
pub(crate) fn save(dir: &Path, splits: &Splits, format: CifarFormat) -> Result<(), DataError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let layout = layout(format);
    let batches = layout.train.len();
    let train_parts = layout
        .train
        .iter()
        .zip(split_even(splits.train.len(), batches));
    let test_part = (layout.test, &splits.test, 0..splits.test.len());
    let parts = train_parts
        .map(|(file, range)| (file.as_str(), &splits.train, range))
        .chain(std::iter::once(test_part));
    let names = &splits.train.class_names;
    let coarse_names: Vec<String> = (0..splits.train.classes.div_ceil(5))
        .map(|i| format!("superclass_{i:02}"))
        .collect();
    for (index, (file, split, range)) in parts.enumerate() {
        let path = dir.join(file);
        match format {
            CifarFormat::Cifar100Bin | CifarFormat::Cifar10Bin => {
                write_bin(&path, format, split, range)?
            }
            CifarFormat::Cifar100Pickle | CifarFormat::Cifar10Pickle => {
                let batch_label = if index < batches {
                    format!("training batch {} of {batches}", index + 1)
                } else {
                    "testing batch 1 of 1".into()
                };
                write_pickle(&path, &batch_dict(format, split, range, &batch_label))?
            }
        }
    }
    let text_list = |items: &[String]| Value::List(items.iter().map(|s| text(s)).collect());
    let names_path = dir.join(layout.names);
    match format {
        CifarFormat::Cifar100Bin => {
            write_lines(&names_path, names)?;
            write_lines(&dir.join("coarse_label_names.txt"), &coarse_names)
        }
        CifarFormat::Cifar10Bin => write_lines(&names_path, names),
        CifarFormat::Cifar100Pickle => {
            let meta = Value::Dict(vec![
                (text("fine_label_names"), text_list(names)),
                (text("coarse_label_names"), text_list(&coarse_names)),
            ]);
            write_pickle(&names_path, &meta)
        }
        CifarFormat::Cifar10Pickle => {
            let per_batch = splits.train.len().div_ceil(CIFAR10_BATCHES);
            let meta = Value::Dict(vec![
                (text("num_cases_per_batch"), Value::Int(per_batch as i64)),
                (text("label_names"), text_list(names)),
                (text("num_vis"), Value::Int(IMAGE_BYTES as i64)),
            ]);
            write_pickle(&names_path, &meta)
        }
    }
}

/// A py2 `str`, as the official pickles use for keys and names.
fn text(s: &str) -> Value {
    Value::Bytes(s.as_bytes().to_vec())
}

fn write_file(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<(), DataError> {
    let file = File::create(path).map_err(io_error(path))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    write(&mut out)
        .and_then(|()| out.flush())
        .map_err(io_error(path))
}

fn write_lines(path: &Path, lines: &[String]) -> Result<(), DataError> {
    write_file(path, |out| {
        lines.iter().try_for_each(|l| writeln!(out, "{l}"))
    })
}

fn write_bin(
    path: &Path,
    format: CifarFormat,
    split: &Dataset,
    range: Range<usize>,
) -> Result<(), DataError> {
    write_file(path, |out| {
        for i in range {
            let label = u8::try_from(split.labels[i]).expect("CIFAR labels are < 100");
            if format == CifarFormat::Cifar100Bin {
                out.write_all(&[coarse(label.into()) as u8])?;
            }
            out.write_all(&[label])?;
            out.write_all(split.image(i))?;
        }
        Ok(())
    })
}

fn write_pickle(path: &Path, value: &Value) -> Result<(), DataError> {
    write_file(path, |out| pickle::write(value, out))
}

/// The dict of one pickled batch, with the keys of the official files.
fn batch_dict(format: CifarFormat, split: &Dataset, range: Range<usize>, batch: &str) -> Value {
    let labels = &split.labels[range.clone()];
    let int_list =
        |f: fn(u16) -> u16| Value::List(labels.iter().map(|&l| Value::Int(f(l).into())).collect());
    let filenames = range
        .clone()
        .zip(labels)
        .map(|(i, &label)| {
            let class = split.class_names.get(usize::from(label));
            let class = class.map_or_else(|| format!("class_{label}"), Clone::clone);
            text(&format!("{class}_s_{i:06}.png"))
        })
        .collect();
    let data = NdArrayU8 {
        shape: vec![range.len(), IMAGE_BYTES],
        data: split.images[range.start * IMAGE_BYTES..range.end * IMAGE_BYTES].to_vec(),
    };
    let mut entries = vec![
        (text("batch_label"), text(batch)),
        (text(label_key(format)), int_list(|l| l)),
    ];
    if format == CifarFormat::Cifar100Pickle {
        entries.push((text("coarse_labels"), int_list(coarse)));
    }
    entries.push((text("data"), data.into_value()));
    entries.push((text("filenames"), Value::List(filenames)));
    Value::Dict(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small dataset with distinct, recognisable pixels per image.
    fn splits(classes: usize, train: usize, test: usize) -> Splits {
        let split = |n: usize, offset: usize| Dataset {
            images: (0..n * IMAGE_BYTES)
                .map(|i| ((i * 7 + offset + i / IMAGE_BYTES) % 256) as u8)
                .collect(),
            labels: (0..n)
                .map(|i| ((i * 3 + offset) % classes) as u16)
                .collect(),
            classes,
            class_names: (0..classes).map(|i| format!("name {i}")).collect(),
        };
        Splits {
            train: split(train, 0),
            test: split(test, 1),
        }
    }

    #[test]
    fn every_format_round_trips_through_save_and_load() {
        for format in CifarFormat::ALL {
            let dir = tempfile::tempdir().unwrap();
            let data = splits(format.classes(), 13, 4);
            save(dir.path(), &data, format).unwrap();
            assert_eq!(load(dir.path(), format).unwrap(), data, "{format}");
            assert_eq!(detect(dir.path()), Some(format));
        }
    }

    #[test]
    fn reads_binary_records_by_hand() {
        let dir = tempfile::tempdir().unwrap();
        let pixels: Vec<u8> = (0..IMAGE_BYTES).map(|i| (i % 200) as u8).collect();
        // CIFAR-100: coarse label 3 (ignored), fine label 17, pixels.
        let mut record = vec![3, 17];
        record.extend(&pixels);
        fs::write(
            dir.path().join("train.bin"),
            [record.clone(), record].concat(),
        )
        .unwrap();
        fs::write(dir.path().join("test.bin"), b"").unwrap();
        let loaded = load(dir.path(), CifarFormat::Cifar100Bin).unwrap();
        assert_eq!(loaded.train.labels, [17, 17]);
        assert_eq!(loaded.train.image(1), pixels);
        assert_eq!(loaded.train.classes, 100);
        assert!(loaded.train.class_names.is_empty() && loaded.test.is_empty());

        // CIFAR-10: label 9, pixels; names from batches.meta.txt, blank lines ignored.
        let mut record = vec![9];
        record.extend(&pixels);
        for i in 1..=5 {
            fs::write(dir.path().join(format!("data_batch_{i}.bin")), &record).unwrap();
        }
        fs::write(dir.path().join("test_batch.bin"), &record).unwrap();
        let names: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
        fs::write(
            dir.path().join("batches.meta.txt"),
            names.join("\n") + "\n\n",
        )
        .unwrap();
        let loaded = load(dir.path(), CifarFormat::Cifar10Bin).unwrap();
        assert_eq!(loaded.train.labels, [9; 5]);
        assert_eq!(loaded.test.image(0), pixels);
        assert_eq!(loaded.train.class_names, names);
    }

    #[test]
    fn loads_from_the_archive_subfolder() {
        for format in CifarFormat::ALL {
            let dir = tempfile::tempdir().unwrap();
            let data = splits(3, 5, 2);
            save(&dir.path().join(format.subfolder()), &data, format).unwrap();
            assert_eq!(load(dir.path(), format).unwrap(), data);
            assert_eq!(detect(dir.path()), Some(format));
        }
    }

    #[test]
    fn class_names_set_the_class_count() {
        let dir = tempfile::tempdir().unwrap();
        let data = splits(7, 20, 5);
        save(dir.path(), &data, CifarFormat::Cifar100Pickle).unwrap();
        let loaded = load(dir.path(), CifarFormat::Cifar100Pickle).unwrap();
        assert_eq!(loaded.train.classes, 7);
        assert_eq!(loaded.train.class_names[6], "name 6");
        // Without names a label up to the format's class count is valid.
        fs::remove_file(dir.path().join("meta")).unwrap();
        let loaded = load(dir.path(), CifarFormat::Cifar100Pickle).unwrap();
        assert_eq!(loaded.train.classes, 100);
        assert!(loaded.train.class_names.is_empty());
    }

    #[test]
    fn missing_directory_error_explains_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("nowhere");
        let message = load(&absent, CifarFormat::Cifar100Bin)
            .unwrap_err()
            .to_string();
        for needle in [
            absent.to_str().unwrap(),
            "cifar100-bin",
            "does not exist",
            "train.bin",
            "test.bin",
            "3074 bytes",
            "cifar-100-binary/",
            "bocb data synth --format cifar100-bin --out DIR",
        ] {
            assert!(message.contains(needle), "{needle:?} not in {message}");
        }
        fs::write(dir.path().join("data_batch_1"), b"").unwrap();
        let message = load(dir.path(), CifarFormat::Cifar10Pickle)
            .unwrap_err()
            .to_string();
        assert!(message.contains("missing data_batch_2, "), "{message}");
        assert!(message.contains("test_batch"), "{message}");
        assert!(message.contains("cifar-10-batches-py/"), "{message}");
        assert_eq!(detect(dir.path()), None);
    }

    #[test]
    fn file_size_must_be_a_multiple_of_the_record() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("train.bin"), vec![0; 3074 * 2 + 5]).unwrap();
        fs::write(dir.path().join("test.bin"), b"").unwrap();
        let message = load(dir.path(), CifarFormat::Cifar100Bin)
            .unwrap_err()
            .to_string();
        let file = dir.path().join("train.bin");
        assert!(message.contains(file.to_str().unwrap()), "{message}");
        assert!(message.contains("size 6153 bytes"), "{message}");
        assert!(message.contains("3074-byte record"), "{message}");
    }

    #[test]
    fn labels_beyond_the_class_count_name_file_and_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = splits(100, 3, 1);
        save(dir.path(), &data, CifarFormat::Cifar100Bin).unwrap();
        // Fine label 100 in record 1 of train.bin.
        let path = dir.path().join("train.bin");
        let mut bytes = fs::read(&path).unwrap();
        bytes[3074 + 1] = 100;
        fs::write(&path, bytes).unwrap();
        let message = load(dir.path(), CifarFormat::Cifar100Bin)
            .unwrap_err()
            .to_string();
        assert!(message.contains(path.to_str().unwrap()), "{message}");
        assert!(message.contains("record 1 has label 100"), "{message}");

        data.test.labels[0] = 10;
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &data, CifarFormat::Cifar10Pickle).unwrap();
        fs::remove_file(dir.path().join("batches.meta")).unwrap();
        let message = load(dir.path(), CifarFormat::Cifar10Pickle)
            .unwrap_err()
            .to_string();
        let path = dir.path().join("test_batch");
        assert!(message.contains(path.to_str().unwrap()), "{message}");
        assert!(
            message.contains("record 0 has label 10, but the dataset has 10 classes"),
            "{message}"
        );
    }

    #[test]
    fn pickle_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &splits(5, 4, 2), CifarFormat::Cifar100Pickle).unwrap();
        let path = dir.path().join("train");
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let message = load(dir.path(), CifarFormat::Cifar100Pickle)
            .unwrap_err()
            .to_string();
        assert!(message.contains(path.to_str().unwrap()), "{message}");
        assert!(message.contains("truncated"), "{message}");

        let dict = Value::Dict(vec![(text("fine_labels"), Value::List(vec![]))]);
        write_pickle(&path, &dict).unwrap();
        let message = load(dir.path(), CifarFormat::Cifar100Pickle)
            .unwrap_err()
            .to_string();
        assert!(message.contains(path.to_str().unwrap()), "{message}");
        assert!(message.contains("no b'data' entry"), "{message}");
    }

    #[test]
    fn python3_written_pickles_load_as_cifar100() {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = [
            include_bytes!("testdata/cifar100_py3_protocol2.pickle").as_slice(),
            include_bytes!("testdata/cifar100_py3_protocol4.pickle"),
        ];
        fs::write(dir.path().join("train"), fixtures[0]).unwrap();
        fs::write(dir.path().join("test"), fixtures[1]).unwrap();
        let loaded = load(dir.path(), CifarFormat::Cifar100Pickle).unwrap();
        for split in [&loaded.train, &loaded.test] {
            assert_eq!(split.labels, [0, 5, 17, 99, 42, 7]);
            assert_eq!(split.image(2)[0], (2 * 3072 % 251) as u8);
            assert_eq!(split.image(5)[3071], ((6 * 3072 - 1) % 251) as u8);
        }
    }
}

//! A model registry that is just a folder or a bucket prefix:
//!
//! ```text
//! <registry>/<name>/<version>/model.onnx
//! <registry>/<name>/<version>/model.toml     version, sha256, created, and what is known
//! <registry>/<name>/aliases.json             {"champion": "7", "challenger": "8"}
//! ```
//!
//! A version exists once its `model.toml` does: registering uploads the model, then creates
//! the card with a create-if-absent write, so a version is never overwritten. Aliases move
//! with a compare-and-swap of `aliases.json` (see [`crate::storage::Folder`]), so two people
//! moving aliases at once cannot lose one's change. A model whose bytes' SHA-256 differs from
//! its card is refused when a job loads it.

use bytes::Bytes;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::storage::{Folder, StorageError, StoreFactory};

pub const MODEL_FILE: &str = "model.onnx";
pub const CARD_FILE: &str = "model.toml";
pub const ALIASES_FILE: &str = "aliases.json";

/// Why the registry cannot do what was asked; each names the registry and the model.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("model registry {0}")]
    Storage(#[from] StorageError),
    #[error("model registry {registry}: no model named {name:?} (models: {known})")]
    NoModel {
        registry: String,
        name: String,
        known: String,
    },
    #[error(
        "model registry {registry}: model {name:?} has no version {version:?} (versions: {known})"
    )]
    NoVersion {
        registry: String,
        name: String,
        version: String,
        known: String,
    },
    #[error("model registry {registry}: model {name:?} has no alias {alias:?} (aliases: {known})")]
    NoAlias {
        registry: String,
        name: String,
        alias: String,
        known: String,
    },
    #[error("{uri}: not a valid {what}: {message}")]
    Corrupt {
        uri: String,
        what: &'static str,
        message: String,
    },
    #[error(
        "{uri}: version {version} of {name:?} exists already; a registered version is never replaced: register a new version"
    )]
    VersionExists {
        uri: String,
        name: String,
        version: String,
    },
    #[error("{what} {value:?}: {}", crate::spec::PLAIN_NAME)]
    BadName { what: &'static str, value: String },
    #[error(
        "{uri}: changed by someone else while this command moved the alias; nothing was changed, run it again"
    )]
    Raced { uri: String },
}

/// A registered version's card, `model.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    /// The version, as its folder is named. Required.
    pub version: String,
    /// SHA-256 of `model.onnx` (hex). Required.
    pub sha256: String,
    /// When it was registered (RFC 3339, UTC). Required.
    pub created: String,
    /// What trained it, e.g. `lightgbm 4.5.0`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<String>,
    /// What converted it to ONNX, e.g. `onnxmltools 1.13`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converter: Option<String>,
    /// The class labels, in the model's order. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// Where its training data is (a path, URL or table name). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_data: Option<String>,
    /// The parity check `models register --reference` made, when it made one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parity: Option<Parity>,
    /// Anything else, as keys and text values. Default: empty.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub metadata: IndexMap<String, String>,
}

/// How the converted model's predictions compared with the training library's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Parity {
    /// The reference predictions file.
    pub reference: String,
    /// The sample rows file.
    pub sample: String,
    pub rows: u64,
    /// The largest absolute difference over every numeric output column.
    pub max_abs_diff: f64,
    /// Rows whose label differed.
    pub label_mismatches: u64,
    /// The largest difference allowed.
    pub tolerance: f64,
}

/// Which version of a model: by number, or by alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Version(String),
    Alias(String),
}

/// A model reference resolved to one registered version.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub registry: String,
    pub name: String,
    pub version: String,
    /// The alias it was chosen by, when it was.
    pub alias: Option<String>,
    /// The model file's path or URL.
    pub model_uri: String,
    pub card: ModelCard,
}

/// A registry folder.
#[derive(Debug, Clone)]
pub struct Registry {
    folder: Folder,
}

/// Checks a model name, version or alias: it becomes a folder or key name.
pub fn check_name(what: &'static str, value: &str) -> Result<(), RegistryError> {
    if crate::spec::is_plain_name(value) {
        Ok(())
    } else {
        Err(RegistryError::BadName {
            what,
            value: value.to_string(),
        })
    }
}

/// Versions in the order people count them: numbers by value, before other names.
pub fn sort_versions(versions: &mut [String]) {
    versions.sort_by(|a, b| match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => std::cmp::Ordering::Less,
        (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        _ => a.cmp(b),
    });
}

fn listed(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

impl Registry {
    /// The registry at `uri` (a folder or a store prefix).
    pub fn open(uri: &str, stores: &StoreFactory) -> Result<Self, RegistryError> {
        Ok(Self {
            folder: Folder::open(uri, stores)?,
        })
    }

    pub fn uri(&self) -> &str {
        &self.folder.uri
    }

    /// The models, by name.
    pub async fn names(&self) -> Result<Vec<String>, RegistryError> {
        Ok(self.folder.folders("").await?)
    }

    /// A model's versions, in order (oldest number first).
    pub async fn versions(&self, name: &str) -> Result<Vec<String>, RegistryError> {
        check_name("model name", name)?;
        let mut versions = self.folder.folders(name).await?;
        sort_versions(&mut versions);
        Ok(versions)
    }

    /// An error naming the models there are, when `name` has no version.
    pub async fn require_model(&self, name: &str) -> Result<(), RegistryError> {
        if self.versions(name).await?.is_empty() {
            return Err(self.missing_version(name, "").await);
        }
        Ok(())
    }

    /// A version's card; an error naming the versions there are when it has none.
    pub async fn card(&self, name: &str, version: &str) -> Result<ModelCard, RegistryError> {
        check_name("model name", name)?;
        check_name("model version", version)?;
        let rel = format!("{name}/{version}/{CARD_FILE}");
        let Some((bytes, _)) = self.folder.get(&rel).await? else {
            return Err(self.missing_version(name, version).await);
        };
        let corrupt = |message: String| RegistryError::Corrupt {
            uri: self.folder.uri_of(&rel),
            what: "model card",
            message,
        };
        let text = String::from_utf8(bytes.to_vec()).map_err(|e| corrupt(e.to_string()))?;
        let card: ModelCard = toml::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        if card.version != version {
            return Err(corrupt(format!(
                "its version is {:?}, but it is in the folder of version {version:?}",
                card.version
            )));
        }
        Ok(card)
    }

    async fn missing_version(&self, name: &str, version: &str) -> RegistryError {
        let versions = self.versions(name).await.unwrap_or_default();
        if versions.is_empty() {
            let known = self.names().await.unwrap_or_default();
            return RegistryError::NoModel {
                registry: self.folder.uri.clone(),
                name: name.to_string(),
                known: listed(&known),
            };
        }
        RegistryError::NoVersion {
            registry: self.folder.uri.clone(),
            name: name.to_string(),
            version: version.to_string(),
            known: listed(&versions),
        }
    }

    /// A model's aliases, with the version of `aliases.json` read (none when it is absent).
    pub async fn aliases(
        &self,
        name: &str,
    ) -> Result<(IndexMap<String, String>, Option<crate::storage::Version>), RegistryError> {
        check_name("model name", name)?;
        let rel = format!("{name}/{ALIASES_FILE}");
        let Some((bytes, version)) = self.folder.get(&rel).await? else {
            return Ok((IndexMap::new(), None));
        };
        let map = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Corrupt {
            uri: self.folder.uri_of(&rel),
            what: "aliases file (a JSON object from alias to version)",
            message: e.to_string(),
        })?;
        Ok((map, Some(version)))
    }

    /// The version `selector` names, with its card.
    pub async fn resolve(
        &self,
        name: &str,
        selector: &Selector,
    ) -> Result<Resolved, RegistryError> {
        let (version, alias) = match selector {
            Selector::Version(v) => (v.clone(), None),
            Selector::Alias(a) => {
                check_name("alias", a)?;
                let (aliases, _) = self.aliases(name).await?;
                let Some(v) = aliases.get(a) else {
                    if self.versions(name).await?.is_empty() {
                        return Err(self.missing_version(name, "").await);
                    }
                    let known: Vec<String> =
                        aliases.iter().map(|(a, v)| format!("{a} -> {v}")).collect();
                    return Err(RegistryError::NoAlias {
                        registry: self.folder.uri.clone(),
                        name: name.to_string(),
                        alias: a.clone(),
                        known: listed(&known),
                    });
                };
                (v.clone(), Some(a.clone()))
            }
        };
        let card = self.card(name, &version).await?;
        Ok(Resolved {
            registry: self.folder.uri.clone(),
            name: name.to_string(),
            model_uri: self
                .folder
                .uri_of(&format!("{name}/{version}/{MODEL_FILE}")),
            version,
            alias,
            card,
        })
    }

    /// Registers `bytes` as a new version with `card`; an existing version is refused.
    pub async fn register(
        &self,
        name: &str,
        bytes: Bytes,
        card: &ModelCard,
    ) -> Result<String, RegistryError> {
        check_name("model name", name)?;
        check_name("model version", &card.version)?;
        let dir = format!("{name}/{}", card.version);
        let exists = || RegistryError::VersionExists {
            uri: self.folder.uri_of(&dir),
            name: name.to_string(),
            version: card.version.clone(),
        };
        if self
            .folder
            .get(&format!("{dir}/{CARD_FILE}"))
            .await?
            .is_some()
        {
            return Err(exists());
        }
        // A model file without a card is what an interrupted register left: replace it.
        self.folder
            .put(&format!("{dir}/{MODEL_FILE}"), bytes)
            .await?;
        let text = toml::to_string(card).map_err(|e| RegistryError::Corrupt {
            uri: self.folder.uri_of(&dir),
            what: "model card",
            message: e.to_string(),
        })?;
        if !self
            .folder
            .create(&format!("{dir}/{CARD_FILE}"), text.into())
            .await?
        {
            return Err(exists());
        }
        Ok(self.folder.uri_of(&dir))
    }

    /// The version after the highest numbered one (1 for a new model).
    pub async fn next_version(&self, name: &str) -> Result<String, RegistryError> {
        let versions = self.versions(name).await?;
        let top = versions.iter().filter_map(|v| v.parse::<u64>().ok()).max();
        Ok((top.unwrap_or(0) + 1).to_string())
    }

    /// Points `alias` at `version` (which must exist); returns the version it pointed at.
    pub async fn set_alias(
        &self,
        name: &str,
        alias: &str,
        version: &str,
    ) -> Result<Option<String>, RegistryError> {
        check_name("alias", alias)?;
        self.card(name, version).await?;
        let (mut aliases, read) = self.aliases(name).await?;
        let before = aliases.insert(alias.to_string(), version.to_string());
        let rel = format!("{name}/{ALIASES_FILE}");
        let mut bytes =
            serde_json::to_vec_pretty(&aliases).map_err(|e| RegistryError::Corrupt {
                uri: self.folder.uri_of(&rel),
                what: "aliases file",
                message: e.to_string(),
            })?;
        bytes.push(b'\n');
        if !self.folder.swap(&rel, read.as_ref(), bytes.into()).await? {
            return Err(RegistryError::Raced {
                uri: self.folder.uri_of(&rel),
            });
        }
        Ok(before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(version: &str, sha256: &str) -> ModelCard {
        ModelCard {
            version: version.into(),
            sha256: sha256.into(),
            created: "2026-12-02T00:00:00Z".into(),
            producer: Some("lightgbm".into()),
            converter: None,
            labels: None,
            training_data: None,
            parity: None,
            metadata: IndexMap::new(),
        }
    }

    #[tokio::test]
    async fn versions_are_never_replaced_and_aliases_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(dir.path().to_str().unwrap(), &StoreFactory::default()).unwrap();
        assert_eq!(r.next_version("churn").await.unwrap(), "1");
        for v in ["1", "2", "10"] {
            r.register("churn", "bytes".into(), &card(v, "ab"))
                .await
                .unwrap();
        }
        let e = r
            .register("churn", "other".into(), &card("2", "cd"))
            .await
            .unwrap_err();
        assert!(matches!(e, RegistryError::VersionExists { .. }), "{e}");
        assert_eq!(r.versions("churn").await.unwrap(), ["1", "2", "10"]);
        assert_eq!(r.next_version("churn").await.unwrap(), "11");
        assert_eq!(r.set_alias("churn", "champion", "2").await.unwrap(), None);
        assert_eq!(
            r.set_alias("churn", "champion", "10").await.unwrap(),
            Some("2".into())
        );
        let got = r
            .resolve("churn", &Selector::Alias("champion".into()))
            .await
            .unwrap();
        assert_eq!(
            (got.version.as_str(), got.alias.as_deref()),
            ("10", Some("champion"))
        );
        assert!(got.model_uri.ends_with("/churn/10/model.onnx"));
        let e = r
            .resolve("churn", &Selector::Version("3".into()))
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .ends_with("has no version \"3\" (versions: 1, 2, 10)"),
            "{e}"
        );
        let e = r.set_alias("churn", "x", "9").await.unwrap_err();
        assert!(matches!(e, RegistryError::NoVersion { .. }), "{e}");
        let e = r
            .resolve("nope", &Selector::Alias("champion".into()))
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .ends_with("no model named \"nope\" (models: churn)"),
            "{e}"
        );
        assert!(check_name("alias", "../x").is_err());
    }
}

//! The name stage's settings (mapper profiles, namespace, block list, extra tags): flags over the
//! `--config` file, the environment's mapper profiles over the file's; the mapper is compiled here,
//! once, so a bad rule is a start-up error.

use std::path::Path;
use std::sync::Arc;

use super::Flags;
use super::file::FileConfig;
use super::flags::NameTagFormat;
use crate::map::name_tags::NameTagFormats;
use crate::map::{DEFAULT_NAMESPACE_EXEMPT, Mapper, NameConfig, ProfileSpec};

/// The name stage's settings: flags over the file, the environment's mapper profiles over the
/// file's.
pub(super) fn names_config(
    f: &Flags,
    file: &FileConfig,
    env_profiles: Option<&str>,
) -> Result<NameConfig, String> {
    let (profiles, source) = match env_profiles.filter(|p| !p.trim().is_empty()) {
        Some(json) => (
            serde_json::from_str::<Vec<ProfileSpec>>(json).map_err(|e| {
                format!("DD_DOGSTATSD_MAPPER_PROFILES is not a JSON list of mapper profiles: {e}")
            })?,
            "DD_DOGSTATSD_MAPPER_PROFILES".to_owned(),
        ),
        None => (
            file.mapper_profiles.clone(),
            format!(
                "--config {}",
                f.config.as_deref().unwrap_or(Path::new("")).display()
            ),
        ),
    };
    let mut checked = crate::map::check(&profiles).map_err(|e| format!("{source}: {e}"))?;
    let mut not_honoured = Vec::new();
    let mut origin = Vec::new();
    let mut exposition = Default::default();
    if let Some(path) = &f.mapping_config {
        let at = format!("--mapping-config {}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| format!("{at}: {e}"))?;
        let exporter = crate::map::exporter::compile(&text).map_err(|e| format!("{at}: {e}"))?;
        not_honoured = exporter.not_honoured;
        exposition = exporter.exposition;
        origin = exporter.origin;
        checked.push(exporter.profile);
    }
    let exporter_profile = f.mapping_config.as_ref().map(|p| (checked.len() - 1, p));
    let mapper = if checked.is_empty() {
        None
    } else {
        let mapper = Mapper::new(&checked).map_err(|e| match exporter_profile {
            // A rule of the mapping file: named by its place in the file.
            Some((p, path)) if e.profile == p => match e.rule {
                Some(r) => format!(
                    "--mapping-config {}: mappings[{}]: {}",
                    path.display(),
                    origin[r],
                    e.what
                ),
                None => format!("--mapping-config {}: {}", path.display(), e.what),
            },
            _ => format!("{source}: {e}"),
        })?;
        Some(Arc::new(mapper))
    };
    let namespace = f
        .namespace
        .clone()
        .or_else(|| file.namespace.clone())
        .filter(|n| !n.is_empty())
        .map(|n| if n.ends_with('.') { n } else { format!("{n}.") });
    let namespace_exempt = if !f.namespace_exempt.is_empty() {
        f.namespace_exempt.clone()
    } else if let Some(list) = &file.namespace_exempt {
        list.clone()
    } else {
        DEFAULT_NAMESPACE_EXEMPT.map(String::from).to_vec()
    };
    let (block_exact, block_prefix) =
        if !f.block_metric.is_empty() || !f.block_metric_prefix.is_empty() {
            (f.block_metric.clone(), f.block_metric_prefix.clone())
        } else if file.block_match_prefix {
            (Vec::new(), file.block_list.clone())
        } else {
            (file.block_list.clone(), Vec::new())
        };
    let (mut extra_tags, tag_source) = if f.tags.is_empty() {
        (
            file.tags.clone(),
            super::file_key(f.config.as_deref(), "dogstatsd_tags"),
        )
    } else {
        (f.tags.clone(), "--tag".to_owned())
    };
    if let Some(bad) = extra_tags
        .iter()
        .find(|t| t.is_empty() || t.contains([',', '|']))
    {
        return Err(format!(
            "{tag_source} {bad:?}: a tag must be non-empty and hold no ',' or '|'"
        ));
    }
    extra_tags.sort();
    extra_tags.dedup();
    Ok(NameConfig {
        mapper,
        cache_size: f
            .mapper_cache_size
            .or(file.mapper_cache_size)
            .unwrap_or(1000),
        namespace,
        namespace_exempt,
        block_exact,
        block_prefix,
        extra_tags,
        name_tags: NameTagFormats {
            influxdb: f.name_tag_formats.contains(&NameTagFormat::Influxdb),
            librato: f.name_tag_formats.contains(&NameTagFormat::Librato),
            signalfx: f.name_tag_formats.contains(&NameTagFormat::Signalfx),
        },
        mapping_not_honoured: not_honoured,
        exposition,
        tag_filters: crate::map::tag_filter::TagFilters::new(
            file.tag_filters.clone(),
            if f.strip_host.is_empty() {
                &file.strip_host
            } else {
                &f.strip_host
            },
        ),
    })
}

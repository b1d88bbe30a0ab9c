//! Origin detection (the pid -> container lookup): the pid a unix socket reports for its sender, mapped to a container id
//! through `<proc root>/<pid>/cgroup` and cached per shard. Reading procfs is a few
//! microseconds and happens once per pid per TTL; everything else is a hash lookup.

use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Pids a shard remembers at most; when full, expired entries go, then all of them.
const MAX_ENTRIES: usize = 16_384;

crate::label::labels! {
    /// Why the sender of a unix socket message has no container id.
    pub enum Unresolved: "reason" {
        /// The kernel gave no pid (a sender in a pid namespace it cannot map).
        NoCredentials => "no_credentials",
        /// `/proc/<pid>/cgroup` could not be read.
        Unreadable => "unreadable",
        /// The cgroup names no container.
        NoContainer => "no_container",
    }
}

/// What a pid resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Container(Rc<[u8]>),
    /// The process runs in no container we recognise (a host process, or a private cgroup
    /// namespace that shows only `/`).
    NoContainer,
    /// `/proc/<pid>/cgroup` could not be read (the process is gone, or /proc is not the host's).
    Unreadable,
}

pub struct ContainerCache {
    proc_root: PathBuf,
    ttl: Duration,
    entries: HashMap<i32, (Lookup, Instant)>,
}

impl ContainerCache {
    pub fn new(proc_root: PathBuf, ttl: Duration) -> Self {
        ContainerCache {
            proc_root,
            ttl,
            entries: HashMap::new(),
        }
    }

    /// The container of `pid`, from the cache while fresh. Results that name no container are
    /// cached as well, so a host process costs one procfs read per TTL.
    pub fn lookup(&mut self, pid: i32, now: Instant) -> &Lookup {
        let fresh = self
            .entries
            .get(&pid)
            .is_some_and(|(_, at)| now.duration_since(*at) < self.ttl);
        if !fresh {
            if self.entries.len() >= MAX_ENTRIES {
                let ttl = self.ttl;
                self.entries
                    .retain(|_, (_, at)| now.duration_since(*at) < ttl);
                if self.entries.len() >= MAX_ENTRIES {
                    self.entries.clear();
                }
            }
            let found = self.read(pid);
            self.entries.insert(pid, (found, now));
        }
        &self.entries[&pid].0
    }

    fn read(&self, pid: i32) -> Lookup {
        let path = self.proc_root.join(pid.to_string()).join("cgroup");
        match std::fs::read_to_string(path) {
            Ok(text) => match container_id_from_cgroup(&text) {
                Some(id) => Lookup::Container(id.as_bytes().into()),
                None => Lookup::NoContainer,
            },
            Err(_) => Lookup::Unreadable,
        }
    }
}

/// Finds a container id in the text of a `/proc/<pid>/cgroup` file, cgroup v1
/// (`4:memory:/docker/<id>`) or v2 (`0::/system.slice/docker-<id>.scope`). The id is the path
/// component, taken from the end, that is (after the runtimes' `docker-`, `cri-containerd-`,
/// `crio-`, `libpod-` prefixes and `.scope` suffix) 64 hex digits (docker, containerd, cri-o,
/// podman), or an ECS task id (`<32 hex>-<digits>`), or a Garden id (`8-4-4-4-4` hex groups).
pub fn container_id_from_cgroup(text: &str) -> Option<&str> {
    for line in text.lines() {
        // hierarchy-ID:controllers:path; the path may itself contain ':'.
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(_), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        for component in path.rsplit('/') {
            let c = component.strip_suffix(".scope").unwrap_or(component);
            let c = [
                "docker-",
                "cri-containerd-",
                "crio-",
                "libpod-",
                "containerd-",
            ]
            .iter()
            .find_map(|p| c.strip_prefix(p))
            .unwrap_or(c);
            if is_container_id(c) {
                return Some(c);
            }
        }
    }
    None
}

fn is_container_id(s: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    if s.len() == 64 && hex(s) {
        return true;
    }
    // ECS: <32 hex>-<digits>.
    if let Some((task, n)) = s.split_once('-')
        && task.len() == 32
        && hex(task)
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
    {
        return true;
    }
    // Garden (Cloud Foundry): 8-4-4-4-4 hex groups.
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 4])
            .all(|(g, n)| g.len() == n && hex(g))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3726184226f5d3147c25fdeab5b60097e378e8a720503a5e19ecfdf29f869860";

    #[test]
    fn every_runtime_layout_gives_its_id() {
        let cases = [
            // docker, cgroup v1
            format!("12:memory:/docker/{ID}\n11:cpu,cpuacct:/docker/{ID}\n"),
            // docker, cgroup v2 (systemd driver)
            format!("0::/system.slice/docker-{ID}.scope\n"),
            // containerd under kubernetes, v1 and v2
            format!("4:cpu:/kubepods/burstable/pod2c48913c-b29f-11e7-9350-020968147796/{ID}\n"),
            format!(
                "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-{ID}.scope\n"
            ),
            // cri-o
            format!("0::/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope\n"),
            // podman
            format!(
                "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container\n"
            ),
        ];
        for text in &cases {
            assert_eq!(container_id_from_cgroup(text), Some(ID), "{text}");
        }
        assert_eq!(
            container_id_from_cgroup(
                "3:cpu:/ecs/task/34dc0b5e626f2c5c4c5170e34b10e765-1234567890\n"
            ),
            Some("34dc0b5e626f2c5c4c5170e34b10e765-1234567890")
        );
        assert_eq!(
            container_id_from_cgroup("1:name=systemd:/garden/01234567-0123-4567-890a-bcde\n"),
            Some("01234567-0123-4567-890a-bcde")
        );
    }

    #[test]
    fn host_processes_have_none() {
        for text in [
            "0::/\n",
            "0::/user.slice/user-1000.slice/session-3.scope\n",
            "4:memory:/process_api/10b84624492101ccfd73a2179c49e8a5\n1:cpu:/\n",
            "0::/kubepods.slice/kubepods-pod2c48913c_b29f_11e7_9350_020968147796.slice\n",
            "garbage",
            "",
        ] {
            assert_eq!(container_id_from_cgroup(text), None, "{text}");
        }
    }

    #[test]
    fn the_cache_reads_once_per_ttl_and_remembers_failures() {
        let root = std::env::temp_dir().join(format!("corestatsd-proc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("42")).unwrap();
        std::fs::write(root.join("42/cgroup"), format!("0::/docker/{ID}\n")).unwrap();
        let mut cache = ContainerCache::new(root.clone(), Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(
            cache.lookup(42, t0),
            &Lookup::Container(ID.as_bytes().into())
        );
        assert_eq!(cache.lookup(7, t0), &Lookup::Unreadable);
        // Within the TTL the file is not read again.
        std::fs::write(root.join("42/cgroup"), "0::/\n").unwrap();
        let t1 = t0 + Duration::from_secs(59);
        assert_eq!(
            cache.lookup(42, t1),
            &Lookup::Container(ID.as_bytes().into())
        );
        let t2 = t0 + Duration::from_secs(61);
        assert_eq!(cache.lookup(42, t2), &Lookup::NoContainer);
        let _ = std::fs::remove_dir_all(&root);
    }
}

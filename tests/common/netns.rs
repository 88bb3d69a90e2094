//! Three "hosts" for MPI jobs across machines, on one machine: network namespaces with one veth
//! each (named `eth0`, on `10.231.N.0/24`), joined by a bridge in a namespace of its own.
//! Addresses exist only inside those namespaces. Everything is deleted on drop, with whatever
//! still runs in it. Used by the cluster tests and the cluster benchmark (needs root and `ip`).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// The namespaces of one run; deleted on drop.
pub struct Hosts {
    names: Vec<String>,
    subnet: String,
    tag: String,
    script: Option<PathBuf>,
}

impl Hosts {
    /// Creates the bridge and the three hosts (what was made so far is deleted on failure).
    pub fn create() -> Result<Hosts, String> {
        let id = std::process::id();
        let mut h = Hosts {
            names: Vec::new(),
            subnet: format!("10.231.{}", id % 200 + 20),
            tag: format!("mpt{id}"),
            script: None,
        };
        let bridge = format!("{}-br", h.tag);
        h.make_ns(&bridge)?;
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &bridge, "link", "set", "br0", "up"])?;
        for i in 1..=3 {
            let ns = h.ns(i);
            h.make_ns(&ns)?;
            let peer = format!("v{i}");
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &peer,
                "netns", &bridge,
            ])?;
            ip(&["-n", &bridge, "link", "set", &peer, "master", "br0"])?;
            ip(&["-n", &bridge, "link", "set", &peer, "up"])?;
            let addr = format!("{}/24", h.host(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(h)
    }

    fn make_ns(&mut self, name: &str) -> Result<(), String> {
        ip(&["netns", "add", name])?;
        self.names.push(name.to_owned());
        Ok(())
    }

    /// Host `i`'s address (1 to 3).
    pub fn host(&self, i: usize) -> String {
        format!("{}.{i}", self.subnet)
    }

    /// Host `i`'s namespace.
    pub fn ns(&self, i: usize) -> String {
        format!("{}-h{i}", self.tag)
    }

    /// The `mpiexec.mpich` options for one rank per host, to be run inside host 1's namespace
    /// (`ip netns exec NS mpiexec.mpich …`). Hydra reaches the other hosts through a script
    /// written here, as it would through ssh: it runs the proxy's command in the namespace of
    /// the host named.
    pub fn mpiexec_args(&mut self) -> Result<Vec<String>, String> {
        let script = std::env::temp_dir().join(format!("{}-launch.sh", self.tag));
        let mut body = String::from(
            "#!/bin/sh\nwhile [ \"${1#-}\" != \"$1\" ]; do shift; done\nhost=$1; shift\ncase $host in\n",
        );
        for i in 1..=3 {
            body.push_str(&format!("  {}) ns={} ;;\n", self.host(i), self.ns(i)));
        }
        body.push_str(
            "  *) echo \"unknown host $host\" >&2; exit 1 ;;\nesac\nexec ip netns exec \"$ns\" sh -c \"$*\"\n",
        );
        std::fs::write(&script, body).map_err(|x| x.to_string())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .map_err(|x| x.to_string())?;
        self.script = Some(script.clone());
        let hosts = (1..=3).map(|i| self.host(i)).collect::<Vec<_>>().join(",");
        Ok([
            "-launcher",
            "ssh",
            "-launcher-exec",
            &script.display().to_string(),
            "-iface",
            "eth0",
            "-hosts",
            &hosts,
            "-ppn",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect())
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in &self.names {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if let Some(s) = &self.script {
            let _ = std::fs::remove_file(s);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|x| format!("ip: {x}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

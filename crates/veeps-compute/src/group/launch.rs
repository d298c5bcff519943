//! Launching an instance: its endpoint, directory, confined process in its cgroup with its log captured; terminating and cleaning up after it.

use super::*;

impl Compute {
    pub(crate) fn endpoint_name(spec: &GroupSpec, iid: &str) -> String {
        format!("{}/{}/{iid}", spec.env, spec.name)
    }

    pub(crate) fn instance_dir(&self, iid: &str) -> PathBuf {
        self.data_dir.join("instances").join(iid)
    }

    /// Writes fresh credentials of `role` into the instance's `.aws` (the JSON its
    /// `credential_process` prints, replaced whole, readable by the instance's user only);
    /// `home` is where the instance sees its directory. Returns their expiry.
    pub(crate) fn write_role_credentials(
        &self,
        iid: &str,
        role: &str,
        home: &std::path::Path,
        ids: Option<Ids>,
    ) -> Result<i64, ComputeError> {
        let roles = self.roles.get().ok_or_else(|| {
            ComputeError::Invalid(
                "instances cannot get role credentials: IAM is not running".into(),
            )
        })?;
        let c = roles
            .issue(role, &format!("instance {iid}"))
            .map_err(|e| ComputeError::Invalid(format!("credentials of role {role}: {e}")))?;
        let dir = self.instance_dir(iid).join(".aws");
        std::fs::create_dir_all(&dir)?;
        let config = format!(
            "[default]\ncredential_process = /bin/cat {}\n",
            home.join(".aws").join("veeps-role.json").display()
        );
        let write = |name: &str, body: &[u8]| -> Result<(), ComputeError> {
            use std::os::unix::fs::PermissionsExt;
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, body)?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o400))?;
            if let Some(ids) = ids {
                sandbox::chown_tree(&tmp, ids)?;
            }
            std::fs::rename(&tmp, dir.join(name))?;
            Ok(())
        };
        write("veeps-role.json", c.process_json().as_bytes())?;
        write("config", config.as_bytes())?;
        if let Some(ids) = ids {
            sandbox::chown_tree(&dir, ids)?;
        }
        self.role_expiry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(iid.to_string(), c.expires);
        Ok(c.expires)
    }

    /// Where the instance sees its own directory (`$HOME`).
    fn instance_home(&self, iid: &str) -> PathBuf {
        if self.ids.is_some() || sandbox::user_namespaces() {
            self.run_dir.join(iid).join("data")
        } else {
            self.instance_dir(iid)
        }
    }

    /// Renews role credentials that have less than half an hour left (SDKs run the
    /// `credential_process` again as theirs near expiry).
    pub(crate) fn renew_role_credentials(&self, g: &Group) {
        let (role, insts, ids) = {
            let r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
            let Some(role) = r.spec.template.iam_role.clone() else {
                return;
            };
            (role, r.instances.clone(), self.instance_ids(&r))
        };
        let now = now_ms() / 1000;
        for i in insts
            .iter()
            .filter(|i| i.lifecycle != Lifecycle::Terminating && i.pid != 0)
        {
            let due = self
                .role_expiry
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&i.id)
                .is_none_or(|e| e - now < role_renew_secs());
            if !due {
                continue;
            }
            let home = self.instance_home(&i.id);
            if let Err(e) = self.write_role_credentials(&i.id, &role, &home, ids) {
                tracing::warn!(instance = %i.id, error = %e, "renewing role credentials failed; retried on the next step");
            }
        }
    }

    /// Starts one instance with `template`.
    pub(crate) async fn launch(
        self: &Arc<Self>,
        g: &Arc<Group>,
        template: &Template,
        cause: String,
    ) -> Result<Instance, ComputeError> {
        let (spec, ids) = {
            let r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
            (r.spec.clone(), self.instance_ids(&r))
        };
        let image = self.images.get(&template.image_id).ok_or_else(|| {
            ComputeError::Invalid(format!("image {} is missing", template.image_id))
        })?;
        let iid = format!("i-{}", hex::encode(rand::random::<[u8; 4]>()));
        // Record it before placing and starting it (with its subnet, so concurrent
        // launches spread): a crash in between leaves a record the next start cleans up.
        let mut inst = {
            let mut r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
            let subnet = pick_subnet(&r);
            let inst = Instance {
                id: iid.clone(),
                subnet_id: subnet,
                address: String::new(),
                fingerprint: template.fingerprint(),
                image_id: template.image_id.clone(),
                launched_ms: now_ms(),
                lifecycle: Lifecycle::Pending,
                pid: 0,
                started: 0,
                failures: 0,
            };
            r.instances.push(inst.clone());
            self.save(&r);
            inst
        };
        let ep = match self
            .net
            .attach(AttachRequest {
                name: Self::endpoint_name(&spec, &iid),
                subnet_id: inst.subnet_id.clone(),
                security_groups: spec.security_groups.clone(),
            })
            .await
        {
            Ok(ep) => ep,
            Err(e) => {
                self.cleanup(g, &inst).await;
                let mut r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
                r.instances.retain(|i| i.id != iid);
                self.save(&r);
                return Err(e.into());
            }
        };
        inst.address = ep.address.to_string();
        match self.spawn(g, template, &image, &inst, &ep, ids).await {
            Ok((pid, started)) => {
                let mut r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(i) = r.instances.iter_mut().find(|i| i.id == iid) {
                    i.pid = pid;
                    i.started = started;
                    i.address = inst.address.clone();
                }
                self.save(&r);
                drop(r);
                self.follow(&spec, &iid);
                self.activity(g, format!("Launching a new instance: {iid}"), cause);
                Ok(Instance {
                    pid,
                    started,
                    ..inst
                })
            }
            Err(e) => {
                self.cleanup(g, &inst).await;
                let mut r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
                r.instances.retain(|i| i.id != iid);
                self.save(&r);
                Err(e)
            }
        }
    }

    /// The directory of an instance's shim (its spool and exit status) on the host.
    pub(crate) fn shim_dir(&self, iid: &str) -> PathBuf {
        self.data_dir.join("shims").join(iid)
    }

    /// Starts the instance's shim, which starts the instance; returns the shim's pid and
    /// start time.
    pub(crate) async fn spawn(
        self: &Arc<Self>,
        g: &Group,
        t: &Template,
        image: &crate::image::Image,
        inst: &Instance,
        ep: &veeps_net::Endpoint,
        ids: Option<Ids>,
    ) -> Result<(u32, u64), ComputeError> {
        let spec = &g.rec.lock().unwrap_or_else(|p| p.into_inner()).spec.clone();
        let wake = g.wake.clone();
        let data = self.instance_dir(&inst.id);
        std::fs::create_dir_all(data.join("tmp"))?;
        let shim_dir = self.shim_dir(&inst.id);
        std::fs::create_dir_all(&shim_dir)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&shim_dir, std::fs::Permissions::from_mode(0o700))?;
        }
        // The instance's directory is its user's; the shim's (spool, exit) is root's, out of
        // the instance's reach.
        if let Some(ids) = ids {
            sandbox::chown_tree(&data, ids)?;
        }
        let image_root = self.images.root(&image.id);
        // With privileges, the image and the private directory are bind-mounted in a
        // mount namespace of the instance's own (the image read-only); without, the
        // instance runs in place.
        // Without privileges, a user namespace (where the kernel allows one) gives the
        // instance the same mount namespace and binds, and hides the data directory.
        let userns = self.ids.is_none() && sandbox::user_namespaces();
        // The shim's directory and program are bound in too: in its own mount namespace
        // only, so no other instance sees them, and whatever directories the veeps binary
        // sits in.
        let (image_at, data_at, shim_at, shim_exe, binds) = if self.ids.is_some() || userns {
            let run_dir = self.run_dir.clone();
            let base = run_dir.join(&inst.id);
            let (im, da, sh) = (base.join("image"), base.join("data"), base.join("shim"));
            let exe = base.join("veeps");
            std::fs::create_dir_all(&im)?;
            std::fs::create_dir_all(&da)?;
            std::fs::create_dir_all(&sh)?;
            std::fs::write(&exe, b"")?;
            for d in [&run_dir, &base] {
                use std::os::unix::fs::PermissionsExt;
                // Unprivileged, the directories are ours alone; privileged, the instance's
                // user must pass through them.
                let mode = if userns { 0o700 } else { 0o755 };
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))?;
            }
            let binds = vec![
                Bind {
                    source: image_root.clone(),
                    target: im.clone(),
                    readonly: true,
                },
                Bind {
                    source: data.clone(),
                    target: da.clone(),
                    readonly: false,
                },
                Bind {
                    source: shim_dir.clone(),
                    target: sh.clone(),
                    readonly: false,
                },
                Bind {
                    source: self.shim_exe.clone(),
                    target: exe.clone(),
                    readonly: true,
                },
            ];
            let mut binds = binds;
            // Names resolve through the VPC's resolver (private zones, then public ones),
            // as AWS's instances use AmazonProvidedDNS.
            let resolver = (!ep.netns.is_empty())
                .then(|| self.net.subnet(&ep.subnet_id).ok())
                .flatten()
                .and_then(|s| self.net.vpc(&s.vpc_id).ok())
                .map(|v| v.resolver());
            if let Some(r) = resolver {
                let conf = base.join("resolv.conf");
                std::fs::write(
                    &conf,
                    format!("nameserver {r}\noptions timeout:2 attempts:2\n"),
                )?;
                binds.push(Bind {
                    source: conf,
                    target: "/etc/resolv.conf".into(),
                    readonly: true,
                });
            }
            (im, da, sh, exe, binds)
        } else {
            (
                image_root.clone(),
                data.clone(),
                shim_dir.clone(),
                self.shim_exe.clone(),
                vec![],
            )
        };
        let cg = Cgroup::new(&self.cgroups, &self.prefix, &inst.id);
        // Its CPU limit applies once it is in service (or after LAUNCH_BOOST): until
        // then it may use every CPU, as a burstable instance spends its launch credits.
        cg.create(Limits {
            cpu: boost_cpu(t.cpu),
            memory: t.memory_mb.saturating_mul(1024 * 1024),
            pids: t.pids,
        })?;
        let first = &image.entrypoint[0];
        let program = if !first.starts_with('/') && image_root.join(first).exists() {
            image_at.join(first)
        } else {
            PathBuf::from(first)
        };
        // A program missing from the image is an error of the launch, as exec's would be.
        let on_host = if program.starts_with(&image_at) {
            image_root.join(first)
        } else {
            program.clone()
        };
        if on_host.is_absolute() && !on_host.exists() {
            return Err(ComputeError::Invalid(format!(
                "cannot start {} in image {}: no such program",
                program.display(),
                image.id
            )));
        }
        let mut cmd = std::process::Command::new(&shim_exe);
        cmd.arg("shim");
        if let Some(ids) = ids {
            // The shim and the instance's init stay root (to mount its /proc and keep the
            // shim's files); the application drops to the group's user.
            cmd.arg("--as").arg(format!("{}:{}", ids.uid, ids.gid));
        }
        cmd.arg("--hostname")
            .arg(&inst.id)
            .arg("--seccomp")
            .arg(&shim_at)
            .arg(&program)
            .args(&image.entrypoint[1..])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .envs(&image.env)
            .envs(&spec.extra_env)
            .envs(&t.env)
            .env("VEEPS_ENV", &spec.env)
            .env("VEEPS_GROUP", &spec.name)
            .env("VEEPS_INSTANCE_ID", &inst.id)
            .env("VEEPS_INSTANCE_ADDRESS", &inst.address)
            .env("VEEPS_CA_PEM", &self.ca_pem)
            .env("HOST", &inst.address)
            .env("HOME", &data_at)
            .env("TMPDIR", data_at.join("tmp"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(p) = t.port {
            cmd.env("PORT", p.to_string());
        }
        // A role's credentials through a credential_process the SDKs run again as they
        // near expiry (static environment credentials would never be renewed).
        if let Some(role) = &t.iam_role {
            self.write_role_credentials(&inst.id, role, &data_at, ids)?;
            cmd.env("AWS_CONFIG_FILE", data_at.join(".aws").join("config"))
                .env("AWS_SDK_LOAD_CONFIG", "1");
        }
        // Secrets last (nothing overrides them), decrypted here and only here.
        for (name, sealed) in &t.secrets {
            let plain = self.kms.decrypt_value(&spec.env, sealed).map_err(|e| {
                ComputeError::Invalid(format!(
                    "cannot start an instance: its secret {name} does not decrypt with environment {}'s key: {e}",
                    spec.env
                ))
            })?;
            cmd.env(name, plain);
        }
        if self.ids.is_none() && !userns {
            cmd.current_dir(&image_at);
        }
        let (uid, gid) = veeps_sys::proc::ids();
        let me = sandbox::Ids { uid, gid };
        sandbox::confine(
            &mut cmd,
            &Confine {
                netns: Some(ep.netns.clone()).filter(|n| !n.is_empty()),
                new_netns: false,
                cgroup_procs: cg.procs_files(),
                ids: None,
                chdir: (self.ids.is_some() || userns).then(|| image_at.clone()),
                binds,
                user_ns: userns.then_some(me),
                hide: if userns {
                    vec![self.data_dir.clone()]
                } else {
                    vec![]
                },
                session: true,
                no_new_privs: true,
                new_pidns: self.ids.is_some() || userns,
                new_ipc_uts: self.ids.is_some() || userns,
                ..Default::default()
            },
        )?;
        let mut child = cmd.spawn().map_err(|e| {
            ComputeError::Invalid(format!(
                "cannot start the supervisor of {} in image {}: {e}",
                program.display(),
                image.id
            ))
        })?;
        let pid = child.id();
        let started = veeps_sys::proc::start_time(pid).unwrap_or(0);
        // Not our child to wait for: the shim's end is read from its directory (whoever
        // runs the control plane then); a thread reaps it if it ends while we run, and
        // wakes the group's supervisor at once (its replacement starts without waiting for
        // the next step).
        std::thread::spawn(move || {
            let _ = child.wait();
            wake.notify_one();
        });
        Ok((pid, started))
    }

    /// Marks an instance terminating (it no longer counts toward the group's size) and
    /// records why; `None` if it is not there.
    fn mark_terminating(&self, g: &Group, iid: &str, cause: String) -> Option<Instance> {
        let inst = {
            let mut r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
            let i = r.instances.iter_mut().find(|i| i.id == iid)?;
            i.lifecycle = Lifecycle::Terminating;
            let i = i.clone();
            self.save(&r);
            i
        };
        self.activity(g, format!("Terminating instance {iid}"), cause);
        Some(inst)
    }

    /// Stops an instance: SIGTERM to its processes, SIGKILL after a grace period; then its
    /// endpoint, cgroup and directories go.
    pub(crate) async fn terminate(self: &Arc<Self>, g: &Arc<Group>, iid: &str, cause: String) {
        if let Some(inst) = self.mark_terminating(g, iid, cause) {
            self.stop_instance(g, inst).await;
        }
    }

    /// The same, in the background: marked at once (so the group launches its
    /// replacement now), stopped and cleaned up beside that launch.
    pub(crate) fn terminate_soon(self: &Arc<Self>, g: &Arc<Group>, iid: &str, cause: String) {
        if let Some(inst) = self.mark_terminating(g, iid, cause) {
            let (me, g2) = (self.clone(), g.clone());
            let h = tokio::spawn(async move { me.stop_instance(&g2, inst).await });
            let mut stops = g.stops.lock().unwrap_or_else(|p| p.into_inner());
            stops.retain(|h| !h.is_finished());
            stops.push(h);
        }
    }

    async fn stop_instance(self: &Arc<Self>, g: &Arc<Group>, inst: Instance) {
        let iid = inst.id.as_str();
        let tgs = g
            .rec
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .spec
            .target_groups
            .clone();
        if let Some(th) = self.target_health.get().filter(|_| !tgs.is_empty()) {
            // Out of the balancers first; in-flight requests finish.
            th.drain(&tgs, &inst.address).await;
        }
        veeps_sys::proc::signal_group(inst.pid, libc::SIGTERM);
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        while tokio::time::Instant::now() < deadline && self.alive(&inst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.cleanup(g, &inst).await;
        let mut r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
        r.instances.retain(|i| i.id != iid);
        self.save(&r);
    }

    pub(crate) fn alive(&self, inst: &Instance) -> bool {
        let cg = Cgroup::new(&self.cgroups, &self.prefix, &inst.id);
        if !matches!(self.cgroups, cgroup::Flavor::None(_)) {
            return !cg.pids().is_empty();
        }
        inst.pid != 0 && Path::new(&format!("/proc/{}", inst.pid)).exists()
    }

    pub(crate) async fn cleanup(&self, g: &Group, inst: &Instance) {
        let spec = g.rec.lock().unwrap_or_else(|p| p.into_inner()).spec.clone();
        self.role_expiry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&inst.id);
        veeps_sys::proc::signal_group(inst.pid, libc::SIGKILL);
        let cg = Cgroup::new(&self.cgroups, &self.prefix, &inst.id);
        let _ = tokio::task::spawn_blocking(move || cg.remove()).await;
        if let Err(e) = self.net.detach(&Self::endpoint_name(&spec, &inst.id)).await {
            tracing::warn!(instance = %inst.id, error = %e, "could not remove the instance's endpoint");
        }
        // Its last lines, then its files.
        self.unfollow(&inst.id);
        let base = self.run_dir.join(&inst.id);
        let _ = std::fs::remove_dir(base.join("image"));
        let _ = std::fs::remove_dir(base.join("data"));
        let _ = std::fs::remove_dir(base.join("shim"));
        let _ = std::fs::remove_file(base.join("veeps"));
        let _ = std::fs::remove_dir(&base);
        // The server's run directory goes with its last instance.
        let _ = std::fs::remove_dir(&self.run_dir);
        let _ = std::fs::remove_dir_all(self.instance_dir(&inst.id));
        let _ = std::fs::remove_dir_all(self.shim_dir(&inst.id));
        g.cpu
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&inst.id);
        g.boost_over
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&inst.id);
    }
}

/// Seconds before expiry at which instances' role credentials are renewed (half an hour;
/// `VEEPS_ROLE_RENEW_SECS` shortens the wait in tests).
fn role_renew_secs() -> i64 {
    static S: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *S.get_or_init(|| {
        std::env::var("VEEPS_ROLE_RENEW_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1800)
    })
}

/// How long a new instance may use every CPU before its limit applies, if it has not
/// entered service by then.
pub(crate) const LAUNCH_BOOST: Duration = Duration::from_secs(30);

/// The CPU a starting instance may use: every CPU of the host (at least its own limit).
fn boost_cpu(limit: f64) -> f64 {
    let all = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    limit.max(all)
}

impl Compute {
    /// Applies an instance's own CPU limit (ending its launch boost). Idempotent.
    pub(crate) fn settle_cpu(&self, iid: &str, t: &Template) {
        let cg = Cgroup::new(&self.cgroups, &self.prefix, iid);
        let l = Limits {
            cpu: t.cpu,
            memory: t.memory_mb.saturating_mul(1024 * 1024),
            pids: t.pids,
        };
        if let Err(e) = cg.create(l) {
            tracing::warn!(instance = %iid, error = %e, "could not apply the instance's CPU limit");
        }
    }
}

//! `egress-agent gateway`: attach the datapath, keep its client list equal to
//! the pod source's, sweep expired flows, serve health and metrics, exit
//! cleanly on SIGTERM/SIGINT.
mod handover;
pub mod reconcile;
mod settings;

use std::{
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use egress_common::config::default_max_flows_per_client;
use tokio::signal::unix::{signal, SignalKind};

use self::{
    handover::{Handover, KeeperEvent},
    settings::{Settings, SourceSettings},
};
use crate::{
    cli::GatewayArgs,
    datapath::{
        gro_stage::{self, GroStage},
        loader::Datapath,
        sweeper::Sweeper,
    },
    netdev,
    observe::{
        self,
        exhaustion::ExhaustionLog,
        metrics::{DatapathSample, GatewayMetrics},
        refusals::RefusalLog,
        Health, StatusSource,
    },
    pods::{file::FileSource, kubernetes::KubeSource, ClientSnapshot, PodSource, SourceHealth},
};

pub fn run(args: GatewayArgs) -> Result<()> {
    // Everything a user can get wrong is checked before touching the kernel.
    let settings = Settings::from_args(&args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(settings))
}

/// The pod source, and its first snapshot when it has one at once (a file).
async fn open_source(settings: &SourceSettings) -> Result<(Box<dyn PodSource>, Option<ClientSnapshot>)> {
    Ok(match settings {
        SourceSettings::File(path) => {
            let (source, first) = FileSource::open(path.clone())?;
            (Box::new(source), Some(first))
        }
        SourceSettings::Kubernetes(selection) => {
            (Box::new(KubeSource::connect(selection.clone()).await?), None)
        }
    })
}

async fn serve(mut settings: Settings) -> Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let (source, first) = open_source(&settings.source).await?;
    let gc_interval = Duration::from_secs(settings.gc_interval_s.max(1));

    let source_health = Arc::new(SourceHealth::default());
    // Liveness allows a few missed sweeps before it calls the loop stuck.
    let health = Arc::new(Health::new(source_health.clone(), (3 * gc_interval.as_secs()).max(30)));
    let metrics = Arc::new(GatewayMetrics {
        sample: Mutex::new(DatapathSample::default()),
        source: source_health.clone(),
        ready: health.ready.clone(),
    });
    let http = observe::serve_metrics(settings.metrics_addr, health.clone(), metrics.registry()).await?;
    let http_task = tokio::spawn(http);
    let status_listener = observe::bind_status(settings.status_addr).await?;

    let mut handover = Handover::new(settings.keeper_socket.as_deref());
    let mut previous = handover.take_previous();
    let known_clients = handover::previous_identities(&mut previous);
    // The load writes the config while the previous agent's program still
    // runs: with the stage's ends as 0 there, that program would send
    // uploads around the stage (reordered) until the stage is set up again
    // below, and one reading the ends twice could redirect a packet to
    // ifindex 0. A pair left in place keeps its ends from the start.
    if settings.gro_stage {
        if let Some((tx, rx)) = gro_stage::existing() {
            settings.datapath_config.gro_ifindex = tx;
            settings.datapath_config.resegment_ifindex = rx;
        }
    }
    let mut datapath = Datapath::load(
        &settings.datapath_config,
        settings.conntrack_size,
        &settings.excluded,
        settings.ebpf_object.as_deref(),
        &mut previous,
    )?;
    if settings.default_share && datapath.conntrack_size != settings.conntrack_size {
        // The running table was kept, at its own size: the default share is
        // an eighth of that one.
        settings.datapath_config.max_flows_per_client = default_max_flows_per_client(datapath.conntrack_size);
        datapath.maps.write_config(&settings.datapath_config)?;
    }
    // After the load, whose errors say which capability is missing.
    let gro_stage = if settings.gro_stage { Some(GroStage::create(settings.interface.mtu)?) } else { None };
    if let Some(stage) = &gro_stage {
        settings.datapath_config.gro_ifindex = stage.tx_ifindex;
        settings.datapath_config.resegment_ifindex = stage.rx_ifindex;
        datapath.maps.write_config(&settings.datapath_config)?;
        // The pair's ends first: the main program may send into it at once.
        datapath.attach_gro_stage(gro_stage::RX, &mut previous)?;
        datapath.attach_resegment(gro_stage::TX, &mut previous)?;
    }
    datapath.attach(&settings.interface.name, &mut previous)?;
    // Whatever of the previous datapath was not taken over goes now.
    drop(previous);
    if gro_stage.is_none() {
        gro_stage::remove_leftover();
    }
    tracing::info!(
        interface = %settings.interface.name,
        gateway_ip = ?settings.interface.ipv4,
        gateway_ip6 = ?settings.interface.ipv6,
        source = %source.describe(),
        metrics = %settings.metrics_addr,
        gro_stage = gro_stage.is_some(),
        flows_carried_over = datapath.adopted,
        "datapath attached; waiting for the client list"
    );
    let status_source = Arc::new(StatusSource {
        maps: Mutex::new(datapath.reader_maps()?),
        interface: settings.interface.name.clone(),
    });
    let status_task = tokio::spawn(observe::serve_status(status_listener, status_source));
    // Carried-over clients keep forwarding until the first snapshot says
    // who they are.
    let mut clients = if datapath.adopted {
        reconcile::ClientTable::carried_over(&mut datapath.maps, &known_clients)?
    } else {
        reconcile::ClientTable::default()
    };
    let mut keeper_event = handover.hand_over(&datapath, &clients);
    // A snapshot that failed to apply, retried at every sweep until it
    // succeeds or a newer one replaces it.
    let mut pending: Option<ClientSnapshot> = None;
    let (updates_tx, mut updates_rx) = tokio::sync::watch::channel(first);
    updates_rx.mark_changed();
    let source_task = tokio::spawn(source.run(updates_tx, source_health));
    let mut gc = tokio::time::interval(gc_interval);
    let mut sweeper = Sweeper::default();
    let mut exhaustion = ExhaustionLog::default();
    let mut refusals = RefusalLog::default();

    while keeper_event.is_none() {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: exiting"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: exiting"); break; }
            event = handover.next_event() => {
                if !matches!(event, KeeperEvent::Gone) {
                    keeper_event = Some(event);
                }
            }
            changed = updates_rx.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the pod source stopped unexpectedly");
                }
                pending = updates_rx.borrow_and_update().clone();
            }
            _ = gc.tick() => {
                let kept = match sweeper.step(&mut datapath.maps, netdev::monotonic_ns()) {
                    Ok(step) => {
                        if step.removed > 0 {
                            tracing::debug!(flows = step.removed, "expired flows removed");
                        }
                        step.tally
                    }
                    Err(err) => {
                        tracing::warn!("conntrack sweep (starting it over): {err:#}");
                        None
                    }
                };
                metrics.refresh(&datapath.maps, &clients, &settings.datapath_config, kept, |samples| {
                    for line in refusals.new_lines(samples, &settings.datapath_config) {
                        tracing::warn!("{line}");
                    }
                });
                match observe::exhaustion::totals(&datapath.maps) {
                    Ok(totals) => {
                        for line in exhaustion.new_lines(&totals, &settings.datapath_config) {
                            tracing::warn!("{line}");
                        }
                    }
                    Err(err) => tracing::warn!("reading NAT exhaustion: {err:#}"),
                }
                keeper_event = handover.hand_over(&datapath, &clients);
                health.loop_alive();
            }
        }
        if let Some(snapshot) = pending.take() {
            // A failed update keeps what the maps hold and is retried.
            match clients.apply(&mut datapath.maps, &snapshot) {
                Ok(()) => {
                    metrics.refresh_clients(&datapath.maps, &clients);
                    // The next agent must know who holds each address.
                    keeper_event = handover.hand_over(&datapath, &clients);
                    if !health.ready.swap(true, Ordering::Relaxed) {
                        tracing::info!(
                            clients = snapshot.len(),
                            "ready: datapath attached and client list applied"
                        );
                    }
                }
                Err(err) => {
                    tracing::error!("applying the client list (retrying at the next sweep): {err:#}");
                    pending = Some(snapshot);
                }
            }
        }
    }
    source_task.abort();
    http_task.abort();
    status_task.abort();
    match keeper_event {
        Some(KeeperEvent::Detach) => tracing::info!("egress-agent detach: detaching and exiting"),
        Some(KeeperEvent::Superseded) => {
            // The newer agent runs this datapath now, GRO stage included.
            if let Some(stage) = gro_stage {
                stage.leave_in_place();
            }
            // Not even dropped: below Linux 6.6 our filters sit at the fixed
            // place where the newer agent replaced them in place, and a drop
            // would detach *its* filters (the process exits right after).
            std::mem::forget(datapath);
            anyhow::bail!(
                "another agent took this gateway's datapath over from the state keeper: exiting without detaching"
            );
        }
        _ if handover.keeps_it_attached(&datapath) => {
            // The keeper's links keep the program attached for the next agent.
            tracing::info!(
                "leaving the datapath running: the state keeper holds it (`egress-agent detach` removes it)"
            );
            if let Some(stage) = gro_stage {
                stage.leave_in_place();
            }
            return Ok(());
        }
        _ => tracing::info!("detaching"),
    }
    drop(datapath);
    drop(gro_stage);
    Ok(())
}

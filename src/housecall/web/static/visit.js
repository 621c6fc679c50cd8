/* Housecall video visit: the waiting room, the call (peer to peer, TURN credentials from the
   server once admitted), mute, camera off, audio only, chat, files and hang-up; the automatic
   step-down to audio only when the connection's stats say video cannot hold; reconnecting after a
   network drop (the signaling with backoff, the media with an ICE restart); past the server's
   threshold the call goes through the SFU instead (decision 0022): one upstream, one subscription
   per other person, all set up through the same WebSocket.
   The server enforces who may do what; this page only follows what it says. */
(function () {
  "use strict";
  var root = document.getElementById("visit");
  if (!root) { return; }
  var role = root.dataset.role;
  // A visit booked as a phone or chat visit uses no camera, microphone or media connection: after
  // admission the page shows the number to call or the chat, and nothing else (decision 0025).
  var modality = root.dataset.modality || "video";
  var media = modality === "video";

  function $(id) { return document.getElementById(id); }
  function text(key, values) {
    var el = document.querySelector('#visit-text [data-key="' + key + '"]');
    var s = el ? el.textContent : key;
    Object.keys(values || {}).forEach(function (k) { s = s.split("{" + k + "}").join(String(values[k])); });
    return s;
  }
  function status(s) { $("visit-status").textContent = s; }
  function show(id, on) { var el = $(id); if (el) { el.hidden = !on; } }

  var scheme = location.protocol === "https:" ? "wss:" : "ws:";
  var ws = null;
  var attempts = 0; // reconnections tried since the signaling last opened
  var me = null;
  var admitted = false;
  var ended = false;
  var iceServers = null;
  var local = null;
  var audioOnly = false;
  var autoStepped = false; // the last switch to audio only was the page's own, on poor stats
  var remoteVideo = new Map(); // peer id -> false once they said they send no video
  var peers = new Map(); // peer id -> {pc, video, pending: [candidates], samples, prev, since}
  var ready = null; // resolves once TURN credentials and the camera are in hand
  var turnWaiter = null;
  // Through the SFU (decision 0022): once the server says so the mesh is closed for good.
  var sfuOn = false;
  var upstream = null; // {pc, samples, prev, since}: our camera and microphone to the SFU
  var subs = new Map(); // peer id -> {pc, video, key, name, samples, prev, since}: one feed each
  var asked = []; // peers we asked to receive, in order (the server answers each in turn)
  var names = new Map(); // peer id -> display name, for the tiles' labels

  function send(message) {
    if (ws.readyState === WebSocket.OPEN) { ws.send(JSON.stringify(message)); }
  }

  function withoutMedia() {
    show("visit-controls", true);
    if (modality === "chat") {
      show("visit-chat", true);
      status(text("in-chat"));
    } else {
      status(text(role === "patient" ? "phone-now" : "phone-call"));
    }
  }

  function getReady() {
    if (ready) { return ready; }
    if (!media) { ready = Promise.resolve().then(withoutMedia); return ready; }
    ready = new Promise(function (resolve) {
      turnWaiter = resolve;
      send({type: "turn"});
    }).then(function () {
      if (local) { return; } // back after a dropped connection: the camera is still ours
      return navigator.mediaDevices.getUserMedia({
        audio: true, video: {width: 320, height: 240}
      }).then(function (stream) {
        local = stream;
        $("visit-local").srcObject = stream;
        $("visit-local").hidden = false;
        show("visit-controls", true);
        show("visit-chat", true);
      }, function () {
        status(text("no-media"));
        local = new MediaStream();
      });
    });
    return ready;
  }

  function peerFor(id, name) {
    var p = peers.get(id);
    if (p) { return p; }
    var pc = new RTCPeerConnection({iceServers: iceServers || []});
    var video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    video.setAttribute("aria-label", name || "");
    video.className = "remote";
    $("visit-remotes").appendChild(video);
    p = {pc: pc, video: video, pending: [], name: name, samples: [], prev: null, since: 0};
    peers.set(id, p);
    local.getTracks().forEach(function (t) { pc.addTrack(t, local); });
    if (audioOnly) {
      pc.getSenders().forEach(function (s) { if (s.track && s.track.kind === "video") { s.replaceTrack(null); } });
    }
    pc.onicecandidate = function (e) {
      if (e.candidate) { send({type: "candidate", to: id, data: e.candidate.toJSON()}); }
    };
    pc.ontrack = function (e) {
      if (video.srcObject !== e.streams[0]) { video.srcObject = e.streams[0]; }
    };
    pc.oniceconnectionstatechange = function () { iceChanged(id, p); };
    return p;
  }

  // -- the media path breaks: an ICE restart through the signaling -----------------------------------

  function iceChanged(id, p) {
    var state = p.pc.iceConnectionState;
    if (state === "connected" || state === "completed") {
      if (p.restarting) { p.restarting = false; status(text("reconnected")); }
      if (!p.since) { p.since = Date.now(); }
      return;
    }
    if (state === "failed") { restartIce(id); }
    if (state === "disconnected") {
      // Often a moment's loss that mends itself; if it does not, find a new path.
      setTimeout(function () { if (p.pc.iceConnectionState === "disconnected") { restartIce(id); } }, 2000);
    }
  }

  async function restartIce(id) {
    var p = peers.get(id);
    if (!p || ended || p.pc.signalingState !== "stable") { return false; }
    p.restarting = true;
    status(text("reconnecting"));
    // Either side may offer again; if both do at once, the side with the larger id gives way
    // (see "offer" below).
    var offer = await p.pc.createOffer({iceRestart: true});
    await p.pc.setLocalDescription(offer);
    send({type: "offer", to: id, data: {type: offer.type, sdp: offer.sdp}});
    return true;
  }

  function dropPeer(id) {
    var p = peers.get(id);
    if (!p) { return; }
    p.pc.close();
    p.video.remove();
    peers.delete(id);
  }

  async function call(peer) {
    await getReady();
    var p = peerFor(peer.id, peer.name);
    var offer = await p.pc.createOffer();
    await p.pc.setLocalDescription(offer);
    send({type: "offer", to: peer.id, data: {type: offer.type, sdp: offer.sdp}});
  }

  // -- through the SFU: one upstream, one subscription per other person ------------------------------

  // Our relay carries no trickled candidates to the SFU: every SDP goes complete.
  function gathered(pc) {
    if (pc.iceGatheringState === "complete") { return Promise.resolve(); }
    return new Promise(function (resolve) {
      var done = function () {
        if (pc.iceGatheringState === "complete") { pc.removeEventListener("icegatheringstatechange", done); resolve(); }
      };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 3000); // whatever was found by then
    });
  }

  function remoteTile(name) {
    var video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    video.setAttribute("aria-label", name || "");
    video.className = "remote";
    $("visit-remotes").appendChild(video);
    return video;
  }

  function closeSfu() {
    if (upstream) { upstream.pc.close(); upstream = null; }
    subs.forEach(function (_s, id) { dropSub(id); });
    asked = [];
    retries.clear();
  }

  function dropSub(id) {
    var s = subs.get(id);
    if (!s) { return; }
    s.pc.close();
    s.video.remove();
    subs.delete(id);
  }

  async function sfuPublish() {
    await getReady();
    if (upstream) { upstream.pc.close(); }
    var pc = new RTCPeerConnection({iceServers: iceServers || []});
    var u = {pc: pc, samples: [], prev: null, since: 0};
    upstream = u;
    var audio = local.getAudioTracks()[0];
    var video = audioOnly ? null : local.getVideoTracks()[0];
    // Both kinds are offered even without a track, so "Try video again" can fill the sender later.
    pc.addTransceiver(audio || "audio", {direction: "sendonly", streams: [local]});
    pc.addTransceiver(video || "video", {direction: "sendonly", streams: [local]});
    pc.oniceconnectionstatechange = function () { sfuIceChanged(u, null); };
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    if (upstream !== u) { return; }
    send({type: "sfu-publish", sdp: pc.localDescription.sdp});
  }

  function sfuSubscribe(id) {
    if (id === me || asked.indexOf(id) >= 0) { return; }
    dropSub(id); // a feed published again (the peer reconnected, a new camera) replaces the old one
    asked.push(id);
    send({type: "sfu-subscribe", peer: id});
  }

  // A feed is announced when its owner publishes, but the SFU lists it only once its media is
  // up: ask again a little later, a bounded number of times, while that person is in the call.
  var retries = new Map(); // peer id -> subscriptions asked again
  var sfuMending = false; // an SFU connection failed and is being set up again
  function retrySubscribe(id) {
    if (!id || !names.has(id) || subs.has(id)) { return; }
    var n = (retries.get(id) || 0) + 1;
    retries.set(id, n);
    if (n > 40) { return; }
    setTimeout(function () {
      chain = chain.then(function () { if (sfuOn && !ended && names.has(id) && !subs.has(id)) { sfuSubscribe(id); } });
    }, 250 * Math.min(n, 4));
  }

  async function sfuOffer(m) {
    retries.delete(m.peer);
    var i = asked.indexOf(m.peer);
    if (i >= 0) { asked.splice(i, 1); }
    dropSub(m.peer);
    var name = names.get(m.peer) || "";
    var pc = new RTCPeerConnection({iceServers: iceServers || []});
    var s = {pc: pc, video: remoteTile(name), key: m.key, name: name, samples: [], prev: null, since: 0};
    subs.set(m.peer, s);
    pc.ontrack = function (e) {
      var stream = e.streams[0] || new MediaStream([e.track]);
      if (!e.streams[0] && s.video.srcObject) { s.video.srcObject.addTrack(e.track); return; }
      if (s.video.srcObject !== stream) { s.video.srcObject = stream; }
    };
    pc.oniceconnectionstatechange = function () { sfuIceChanged(s, m.peer); };
    await pc.setRemoteDescription({type: "offer", sdp: m.sdp});
    await pc.setLocalDescription(await pc.createAnswer());
    await gathered(pc);
    if (subs.get(m.peer) !== s) { return; }
    send({type: "sfu-start", key: m.key, sdp: pc.localDescription.sdp});
  }

  // An SFU connection that breaks is set up again (publish or subscribe anew): the SFU's side of
  // an ICE restart would need its own request, and a fresh join costs about as much.
  function sfuIceChanged(entry, peer) {
    var state = entry.pc.iceConnectionState;
    if (state === "connected" || state === "completed") {
      if (!entry.since) { entry.since = Date.now(); }
      if (sfuMending) { sfuMending = false; status(text("reconnected")); }
      return;
    }
    var again = function () {
      if (ended || !sfuOn) { return; }
      if (peer === null && upstream === entry) { chain = chain.then(sfuPublish); }
      if (peer !== null && subs.get(peer) === entry) { dropSub(peer); sfuSubscribe(peer); }
    };
    if (state === "failed") { sfuMending = true; status(text("reconnecting")); again(); }
    if (state === "disconnected") {
      setTimeout(function () { if (entry.pc.iceConnectionState === "disconnected") { again(); } }, 2000);
    }
  }

  async function startSfu() {
    sfuOn = true;
    if (peers.size) { status(text("sfu-on")); }
    // The mesh ends here for good: the server keeps the visit on the SFU until it ends.
    peers.forEach(function (_p, id) { dropPeer(id); });
    await sfuPublish();
    names.forEach(function (_n, id) { sfuSubscribe(id); });
  }

  async function flush(p) {
    while (p.pending.length) { await p.pc.addIceCandidate(p.pending.shift()); }
  }

  function stopAll() {
    peers.forEach(function (_p, id) { dropPeer(id); });
    closeSfu();
    if (local) { local.getTracks().forEach(function (t) { t.stop(); }); }
    show("visit-controls", false);
  }

  function renderLobby(members) {
    var list = $("visit-lobby-list");
    if (!list) { return; }
    list.textContent = "";
    var waiting = members.filter(function (m) { return !m.admitted && m.id !== me; });
    $("visit-lobby-empty").hidden = waiting.length > 0;
    waiting.forEach(function (m) {
      var li = document.createElement("li");
      var label = document.createElement("span");
      label.textContent = m.name + (m.state ? " · " + m.state : "") + (m.check ? " · " + text("check-" + m.check) : "");
      li.appendChild(label);
      var admit = document.createElement("button");
      admit.type = "button";
      admit.className = "small";
      admit.textContent = text("admit");
      admit.dataset.who = m.id;
      admit.addEventListener("click", function () { send({type: "admit", who: m.id}); });
      li.appendChild(admit);
      // A note to someone still waiting ("two more minutes").
      var form = document.createElement("form");
      form.className = "inline-form";
      var input = document.createElement("input");
      input.type = "text";
      input.maxLength = 500;
      input.setAttribute("aria-label", text("message") + ": " + m.name);
      var go = document.createElement("button");
      go.type = "submit";
      go.className = "small secondary";
      go.textContent = text("message");
      form.appendChild(input);
      form.appendChild(go);
      form.addEventListener("submit", function (e) {
        e.preventDefault();
        if (input.value.trim()) { send({type: "notice", who: m.id, text: input.value}); }
        input.value = "";
      });
      li.appendChild(form);
      list.appendChild(li);
    });
  }

  function addChat(who, line, file) {
    var li = document.createElement("li");
    var strong = document.createElement("strong");
    strong.textContent = who + ": ";
    li.appendChild(strong);
    if (file) {
      // A file shared in the call: a download link (the server checks who may open it).
      var a = document.createElement("a");
      a.href = file.url;
      a.setAttribute("download", "");
      a.textContent = file.name;
      li.appendChild(a);
    } else {
      li.appendChild(document.createTextNode(line));
    }
    $("visit-chat-log").appendChild(li);
  }

  // Messages are handled one after another (a candidate must not overtake its offer); TURN
  // credentials are taken at once, since handling an offer waits for them.
  var chain = Promise.resolve();
  function onMessage(event) {
    var m = JSON.parse(event.data);
    if (m.type === "turn") {
      iceServers = m.iceServers;
      if (turnWaiter) { turnWaiter(); turnWaiter = null; }
      return;
    }
    chain = chain.then(function () { return handle(m); }).catch(function (err) { console.error(err); });
  }

  async function handle(m) {
    if (!media && (["peers", "offer", "answer", "candidate"].indexOf(m.type) >= 0 || m.type.indexOf("sfu") === 0)) {
      if (m.you) { me = m.you; }
      return; // no media connection in a phone or chat visit
    }
    switch (m.type) {
      case "welcome":
        if (me !== null) {
          // Back after a dropped connection: the others were told we left, so every call is
          // set up again with our new id (the camera and the visit are kept).
          peers.forEach(function (_p, id) { dropPeer(id); });
          closeSfu(); // the SFU forgot our old id too: publish and subscribe again on "sfu"
          names.clear();
          ready = null;
        }
        var back = me !== null;
        me = m.you;
        admitted = m.admitted;
        if (admitted && back && audioOnly) { sendState(autoStepped); } // the others' pages were reset too
        if (admitted) { status(text("in-call")); getReady(); } else {
          status(text("waiting-status"));
          show("visit-waiting", true);
        }
        break;
      case "waiting":
        if (m.ahead > 0) {
          $("visit-place").textContent = text("waiting", {n: m.position, m: Math.max(1, m.minutes)});
        } else {
          $("visit-place").textContent = m.minutes > 0 ? text("next", {m: m.minutes}) : text("next-now");
        }
        break;
      case "admitted":
        admitted = true;
        show("visit-waiting", false);
        status(text("admitted"));
        await getReady();
        break;
      case "peers":
        me = m.you;
        m.peers.forEach(function (peer) { names.set(peer.id, peer.name); });
        await getReady();
        if (sfuOn) { break; } // through the SFU each feed is announced ("sfu-feed")
        for (var peer of m.peers) {
          // One side of each pair offers: the one with the smaller id (no glare).
          if (!peers.has(peer.id) && me < peer.id) { await call(peer); }
        }
        break;
      case "offer": {
        if (sfuOn) { break; } // a late offer of the mesh: this call goes through the SFU now
        await getReady();
        var p = peerFor(m.from, m.fromName);
        if (p.pc.signalingState !== "stable" && me < m.from) { break; } // both offered: ours stands
        await p.pc.setRemoteDescription(m.data); // theirs stands: ours is rolled back
        await flush(p);
        var answer = await p.pc.createAnswer();
        await p.pc.setLocalDescription(answer);
        send({type: "answer", to: m.from, data: {type: answer.type, sdp: answer.sdp}});
        break;
      }
      case "answer": {
        var pa = peers.get(m.from);
        if (pa) {
          await pa.pc.setRemoteDescription(m.data);
          await flush(pa);
          // A restart on a path that still works keeps its state: no change event to wait for.
          if (pa.restarting && ["connected", "completed"].indexOf(pa.pc.iceConnectionState) >= 0) {
            pa.restarting = false;
            status(text("reconnected"));
          }
        }
        break;
      }
      case "candidate": {
        var pc = peers.get(m.from);
        if (!pc) { break; }
        if (pc.pc.remoteDescription) { await pc.pc.addIceCandidate(m.data); } else { pc.pending.push(m.data); }
        break;
      }
      case "joined":
        names.set(m.peer.id, m.peer.name);
        break;
      case "left":
        dropPeer(m.peer);
        dropSub(m.peer);
        names.delete(m.peer);
        break;
      case "sfu":
        if (m.on && !ended) { await startSfu(); }
        break;
      case "sfu-answer":
        if (upstream && upstream.pc.signalingState === "have-local-offer") {
          await upstream.pc.setRemoteDescription({type: "answer", sdp: m.sdp});
        }
        break;
      case "sfu-feed":
        if (sfuOn) { sfuSubscribe(m.peer); }
        break;
      case "sfu-offer":
        if (sfuOn) { await sfuOffer(m); }
        break;
      case "sfu-started":
        subs.forEach(function (s) { if (s.key === m.key) { s.started = true; } });
        break;
      case "lobby":
        renderLobby(m.members);
        break;
      case "chat":
        addChat(m.fromName, m.text, m.file);
        break;
      case "notice": {
        var list = $("visit-notices");
        if (list) {
          var li = document.createElement("li");
          li.textContent = m.fromName + ": " + m.text;
          list.appendChild(li);
        }
        break;
      }
      case "state":
        if (m.data && "video" in m.data) { remoteVideo.set(m.from, !!m.data.video); }
        if (m.data && m.data.mode === "audio") {
          status(text(m.data.auto ? "remote-auto-audio" : "remote-audio-only", {name: m.fromName}));
        }
        break;
      case "ended":
        ended = true;
        stopAll();
        status(text("ended"));
        break;
      case "phone":
        ended = true;
        stopAll();
        status(text("phone"));
        break;
      case "error":
        if (m.code === "not-admitted") { status(text("refused")); }
        // A feed not published yet: its "sfu-feed" comes when it is, and we ask again then.
        if (m.refused === "sfu-subscribe") { retrySubscribe(asked.shift()); }
        if (m.refused === "sfu-publish" && sfuOn) { status(text("sfu-failed")); }
        break;
    }
  }
  // The server's refusals come as close codes (visits/signal.py); each has its own sentence.
  // Any other close is a dropped connection: try again with growing pauses, keeping the visit.
  var CLOSED = {4401: "closed-signin", 4404: "closed-not-yours", 4409: "closed-check-in", 4410: "ended",
                4451: "closed-unlicensed"};
  var BACKOFF_MS = [250, 500, 1000, 2000, 4000, 8000];
  var GIVE_UP_AFTER = 12; // about a minute and a quarter of trying

  function connect() {
    ws = new WebSocket(scheme + "//" + location.host + root.dataset.signal);
    ws.onmessage = onMessage;
    ws.onopen = function () { attempts = 0; };
    ws.onclose = function (event) {
      if (ended) { return; }
      if (CLOSED[event.code] || attempts >= GIVE_UP_AFTER) {
        stopAll();
        status(text(CLOSED[event.code] || "closed"));
        return;
      }
      status(text("reconnecting"));
      var wait = BACKOFF_MS[Math.min(attempts, BACKOFF_MS.length - 1)];
      attempts += 1;
      setTimeout(connect, wait + Math.floor(Math.random() * wait / 2));
    };
  }
  connect();

  function sendState(auto) {
    var a = local && local.getAudioTracks()[0];
    var v = local && local.getVideoTracks()[0];
    var data = {audio: !!(a && a.enabled), video: !!(v && v.enabled && !audioOnly), mode: audioOnly ? "audio" : "video"};
    if (auto) { data.auto = true; }
    send({type: "state", data: data});
  }

  // -- audio only: by hand, or by the page when video cannot hold ----------------------------------

  function toAudioOnly() {
    // No renegotiation: the video sender sends nothing, and the camera is released.
    audioOnly = true;
    sending().forEach(function (p) {
      p.pc.getSenders().forEach(function (s) { if (s.track && s.track.kind === "video") { s.replaceTrack(null); } });
    });
    local.getVideoTracks().forEach(function (t) { t.stop(); local.removeTrack(t); });
    $("visit-local").hidden = true;
    var button = $("visit-audio-only");
    button.setAttribute("aria-pressed", "true");
    button.textContent = text("video-again");
  }

  async function backToVideo() {
    var stream = await navigator.mediaDevices.getUserMedia({video: {width: 320, height: 240}});
    var track = stream.getVideoTracks()[0];
    local.addTrack(track);
    audioOnly = false;
    autoStepped = false;
    sending().forEach(function (p) {
      p.samples = [];
      p.since = Date.now(); // a new camera track ramps up: judge it after a fresh start
      p.pc.getTransceivers().forEach(function (t) {
        if (t.receiver.track && t.receiver.track.kind === "video") { t.sender.replaceTrack(track); }
      });
    });
    $("visit-local").hidden = false;
    show("visit-stepdown", false);
    var button = $("visit-audio-only");
    button.setAttribute("aria-pressed", "false");
    button.textContent = text("audio-only");
  }

  // The connections that carry our camera: each mesh peer, or the one upstream to the SFU.
  function sending() {
    var out = Array.from(peers.values());
    if (upstream) { out.push(upstream); }
    return out;
  }

  function stepDown() {
    if (audioOnly || ended) { return; }
    autoStepped = true;
    toAudioOnly();
    show("visit-stepdown", true);
    sendState(true);
  }

  // -- is the video holding? (a pure decision on samples read from getStats once a second) ----------

  // The same limits as the technology check's verdict (visits/service.verdict): round trips over
  // 400 ms, more than 5 % loss or under 300 kbit/s available mean audio only; and video that
  // moves at under 5 frames a second is not video any more.
  var LIMITS = {rttMs: 400, lossPct: 5, bitrateKbps: 300, fps: 5, holdSeconds: 6};

  function poorReason(sample, limits) {
    var l = limits || LIMITS;
    if (sample.rttMs != null && sample.rttMs > l.rttMs) { return "rtt"; }
    if (sample.lossPct != null && sample.lossPct > l.lossPct) { return "loss"; }
    if (sample.bitrateKbps != null && sample.bitrateKbps < l.bitrateKbps) { return "bitrate"; }
    if (sample.fpsOut != null && sample.fpsOut < l.fps) { return "fps-out"; }
    if (sample.fpsIn != null && sample.fpsIn < l.fps) { return "fps-in"; }
    return null;
  }

  // Samples are one a second, oldest first: step down only when every one of the last
  // ``holdSeconds`` was poor (a moment's dip must not take the picture away).
  function videoCannotHold(samples, limits) {
    var l = limits || LIMITS;
    if (samples.length < l.holdSeconds) { return false; }
    return samples.slice(-l.holdSeconds).every(function (s) { return poorReason(s, l) !== null; });
  }

  // One sample of a peer connection from its stats and the previous counters.
  function sampleOf(stats, prev, sendingVideo, remoteSendsVideo) {
    var now = {lost: 0, received: 0, decoded: 0, at: Date.now()};
    var sample = {rttMs: null, lossPct: null, bitrateKbps: null, fpsOut: null, fpsIn: null};
    var pairs = {};
    var selected = null;
    stats.forEach(function (s) {
      if (s.type === "transport" && s.selectedCandidatePairId) { selected = s.selectedCandidatePairId; }
      if (s.type === "candidate-pair") { pairs[s.id] = s; }
    });
    var pair = selected ? pairs[selected] : null;
    if (!pair) {
      Object.keys(pairs).forEach(function (k) { if (pairs[k].nominated && pairs[k].state === "succeeded") { pair = pairs[k]; } });
    }
    if (pair) {
      if (pair.currentRoundTripTime != null) { sample.rttMs = pair.currentRoundTripTime * 1000; }
      if (pair.availableOutgoingBitrate != null && sendingVideo) { sample.bitrateKbps = pair.availableOutgoingBitrate / 1000; }
    }
    var outLoss = null;
    stats.forEach(function (s) {
      if (s.type === "outbound-rtp" && s.kind === "video" && sendingVideo && s.framesPerSecond != null) {
        sample.fpsOut = s.framesPerSecond;
      }
      if (s.type === "outbound-rtp" && s.kind === "video" && sendingVideo && s.framesPerSecond == null && s.framesSent != null) {
        now.framesSent = s.framesSent;
      }
      if (s.type === "remote-inbound-rtp" && s.fractionLost != null) {
        outLoss = Math.max(outLoss || 0, s.fractionLost * 100);
      }
      if (s.type === "inbound-rtp") {
        now.lost += s.packetsLost || 0;
        now.received += s.packetsReceived || 0;
        if (s.kind === "video") {
          now.decoded += s.framesDecoded || 0;
          if (remoteSendsVideo && s.framesPerSecond != null) { sample.fpsIn = s.framesPerSecond; }
        }
      }
    });
    if (prev) {
      var lost = now.lost - prev.lost;
      var got = now.received - prev.received;
      if (lost + got > 20) { sample.lossPct = Math.max(0, 100 * lost / (lost + got)); }
      // No frames at all is a peer that sends no video (audio only, a camera that failed), not a
      // network that cannot carry it: only a trickle of frames counts against the connection.
      if (now.decoded === prev.decoded) { sample.fpsIn = null; }
      if (now.framesSent != null && prev.framesSent != null && sample.fpsOut == null) {
        sample.fpsOut = 1000 * (now.framesSent - prev.framesSent) / Math.max(1, now.at - prev.at);
      }
    }
    if (outLoss != null) { sample.lossPct = Math.max(sample.lossPct || 0, outLoss); }
    return {sample: sample, counters: now};
  }

  var WARM_UP_MS = 5000; // a new connection's bandwidth estimate starts low and ramps up
  async function watchStats() {
    if (ended || !admitted || audioOnly) { return; }
    var v = local && local.getVideoTracks()[0];
    var sendingVideo = !!(v && v.enabled && v.readyState === "live");
    // Through the SFU the upstream shows what we send and each subscription what we receive.
    var watched = Array.from(peers.entries()).map(function (e) { return [e[0], e[1], sendingVideo]; });
    if (upstream) { watched.push([null, upstream, sendingVideo]); }
    subs.forEach(function (s, id) { watched.push([id, s, false]); });
    for (var entry of watched) {
      var id = entry[0];
      var p = entry[1];
      if (!p.since || Date.now() - p.since < WARM_UP_MS) { continue; }
      if (p.pc.iceConnectionState !== "connected" && p.pc.iceConnectionState !== "completed") { continue; }
      var read = sampleOf(await p.pc.getStats(), p.prev, entry[2], id !== null && remoteVideo.get(id) !== false);
      p.prev = read.counters;
      p.samples.push(read.sample);
      if (p.samples.length > 30) { p.samples.shift(); }
      if (videoCannotHold(p.samples)) { stepDown(); return; }
    }
  }
  setInterval(function () { watchStats().catch(function (err) { console.error(err); }); }, 1000);

  $("visit-mute").addEventListener("click", function () {
    var a = local && local.getAudioTracks()[0];
    if (!a) { return; }
    a.enabled = !a.enabled;
    this.setAttribute("aria-pressed", String(!a.enabled));
    this.textContent = text(a.enabled ? "mute" : "unmute");
    sendState();
  });
  $("visit-camera").addEventListener("click", function () {
    var v = local && local.getVideoTracks()[0];
    if (!v || audioOnly) { return; }
    v.enabled = !v.enabled;
    this.setAttribute("aria-pressed", String(!v.enabled));
    this.textContent = text(v.enabled ? "camera-off" : "camera-on");
    sendState();
  });
  $("visit-audio-only").addEventListener("click", async function () {
    if (!audioOnly) {
      toAudioOnly();
      show("visit-stepdown", false);
    } else {
      await backToVideo();
    }
    sendState();
  });
  $("visit-try-video").addEventListener("click", async function () {
    await backToVideo();
    sendState();
    $("visit-audio-only").focus();
  });
  $("visit-hangup").addEventListener("click", function () {
    ended = true;
    send({type: "hangup"});
    stopAll();
    status(text("ended"));
  });
  $("visit-chat-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var input = $("visit-chat-text");
    if (input.value.trim()) { send({type: "chat", text: input.value}); }
    input.value = "";
  });
  // A file goes up over HTTP (the form's CSRF token in it); the server announces it in the call.
  // Guests have no file form (no session to post with).
  var fileForm = $("visit-file-form");
  if (fileForm) fileForm.addEventListener("submit", async function (e) {
    e.preventDefault();
    var form = this;
    var error = $("visit-file-error");
    var input = $("visit-file");
    error.hidden = true;
    input.removeAttribute("aria-invalid");
    if (!input.files.length) { error.textContent = text("choose-file"); error.hidden = false; return; }
    try {
      var response = await fetch(form.action, {method: "POST", body: new FormData(form),
                                               headers: {"Accept": "application/json"}, credentials: "same-origin"});
      var body = await response.json();
      if (!response.ok) { throw new Error(body.error || text("file-failed")); }
      form.reset();
    } catch (err) {
      error.textContent = err.message || text("file-failed");
      error.hidden = false;
      input.setAttribute("aria-invalid", "true");
    }
  });

  // For people and tests alike: what is arriving from each peer right now.
  window.housecallVisit = {
    me: function () { return me; },
    admitted: function () { return admitted; },
    audioOnly: function () { return audioOnly; },
    autoStepped: function () { return autoStepped; },
    signal: function () { return ws; },
    restartIce: async function () {
      var n = 0;
      for (var id of Array.from(peers.keys())) { if (await restartIce(id)) { n += 1; } }
      return n;
    },
    connections: function () {
      var out = Array.from(peers.values()).map(function (p) { return p.pc; });
      if (upstream) { out.push(upstream.pc); }
      subs.forEach(function (s) { out.push(s.pc); });
      return out;
    },
    // Through the SFU: whether, the upstream's state, and each subscription (peer, label, state).
    sfu: function () {
      return {on: sfuOn, mesh: peers.size, upstream: upstream ? upstream.pc.connectionState : null,
              subscriptions: Array.from(subs.entries()).map(function (e) {
                return {peer: e[0], label: e[1].video.getAttribute("aria-label"), started: !!e[1].started,
                        state: e[1].pc.connectionState};
              })};
    },
    // What our upstream to the SFU has sent (video frames, audio packets).
    outbound: async function () {
      var row = {framesSent: 0, audioPackets: 0};
      if (!upstream) { return row; }
      (await upstream.pc.getStats()).forEach(function (s) {
        if (s.type === "outbound-rtp" && s.kind === "video") { row.framesSent += s.framesSent || 0; }
        if (s.type === "outbound-rtp" && s.kind === "audio") { row.audioPackets += s.packetsSent || 0; }
      });
      return row;
    },
    // The step-down decision, pure, so it can be checked on made-up samples.
    limits: LIMITS,
    poorReason: poorReason,
    videoCannotHold: videoCannotHold,
    samples: function () {
      var all = Array.from(peers.values()).concat(upstream ? [upstream] : [], Array.from(subs.values()));
      return all.map(function (p) { return p.samples.slice(); });
    },
    inbound: async function () {
      var out = [];
      var receiving = Array.from(peers.entries()).concat(Array.from(subs.entries()));
      for (var entry of receiving) {
        var stats = await entry[1].pc.getStats();
        var row = {peer: entry[0], framesDecoded: 0, audioPackets: 0, state: entry[1].pc.connectionState};
        stats.forEach(function (s) {
          if (s.type === "inbound-rtp" && s.kind === "video") { row.framesDecoded += s.framesDecoded || 0; }
          if (s.type === "inbound-rtp" && s.kind === "audio") { row.audioPackets += s.packetsReceived || 0; }
        });
        out.push(row);
      }
      return out;
    }
  };
})();

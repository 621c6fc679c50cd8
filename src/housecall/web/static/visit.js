/* Housecall video visit: the waiting room, the call (peer to peer, TURN credentials from the
   server once admitted), mute, camera off, audio only, chat and hang-up.
   The server enforces who may do what; this page only follows what it says. */
(function () {
  "use strict";
  var root = document.getElementById("visit");
  if (!root) { return; }
  var role = root.dataset.role;

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
  var ws = new WebSocket(scheme + "//" + location.host + root.dataset.signal);
  var me = null;
  var admitted = false;
  var ended = false;
  var iceServers = null;
  var local = null;
  var audioOnly = false;
  var peers = new Map(); // peer id -> {pc, video, pending: [candidates]}
  var ready = null; // resolves once TURN credentials and the camera are in hand
  var turnWaiter = null;

  function send(message) {
    if (ws.readyState === WebSocket.OPEN) { ws.send(JSON.stringify(message)); }
  }

  function getReady() {
    if (ready) { return ready; }
    ready = new Promise(function (resolve) {
      turnWaiter = resolve;
      send({type: "turn"});
    }).then(function () {
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
    p = {pc: pc, video: video, pending: [], name: name};
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
    return p;
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

  async function flush(p) {
    while (p.pending.length) { await p.pc.addIceCandidate(p.pending.shift()); }
  }

  function stopAll() {
    peers.forEach(function (_p, id) { dropPeer(id); });
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

  function addChat(who, line) {
    var li = document.createElement("li");
    var strong = document.createElement("strong");
    strong.textContent = who + ": ";
    li.appendChild(strong);
    li.appendChild(document.createTextNode(line));
    $("visit-chat-log").appendChild(li);
  }

  // Messages are handled one after another (a candidate must not overtake its offer); TURN
  // credentials are taken at once, since handling an offer waits for them.
  var chain = Promise.resolve();
  ws.onmessage = function (event) {
    var m = JSON.parse(event.data);
    if (m.type === "turn") {
      iceServers = m.iceServers;
      if (turnWaiter) { turnWaiter(); turnWaiter = null; }
      return;
    }
    chain = chain.then(function () { return handle(m); }).catch(function (err) { console.error(err); });
  };

  async function handle(m) {
    switch (m.type) {
      case "welcome":
        me = m.you;
        admitted = m.admitted;
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
        await getReady();
        for (var peer of m.peers) {
          // One side of each pair offers: the one with the smaller id (no glare).
          if (!peers.has(peer.id) && me < peer.id) { await call(peer); }
        }
        break;
      case "offer": {
        await getReady();
        var p = peerFor(m.from, m.fromName);
        await p.pc.setRemoteDescription(m.data);
        await flush(p);
        var answer = await p.pc.createAnswer();
        await p.pc.setLocalDescription(answer);
        send({type: "answer", to: m.from, data: {type: answer.type, sdp: answer.sdp}});
        break;
      }
      case "answer": {
        var pa = peers.get(m.from);
        if (pa) { await pa.pc.setRemoteDescription(m.data); await flush(pa); }
        break;
      }
      case "candidate": {
        var pc = peers.get(m.from);
        if (!pc) { break; }
        if (pc.pc.remoteDescription) { await pc.pc.addIceCandidate(m.data); } else { pc.pending.push(m.data); }
        break;
      }
      case "left":
        dropPeer(m.peer);
        break;
      case "lobby":
        renderLobby(m.members);
        break;
      case "chat":
        addChat(m.fromName, m.text);
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
        if (m.data && m.data.mode === "audio") { status(text("remote-audio-only", {name: m.fromName})); }
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
        break;
    }
  }
  // The server's refusals come as close codes (visits/signal.py); each has its own sentence.
  var CLOSED = {4401: "closed-signin", 4404: "closed-not-yours", 4409: "closed-check-in", 4410: "ended",
                4451: "closed-unlicensed"};
  ws.onclose = function (event) {
    if (ended) { return; }
    stopAll();
    status(text(CLOSED[event.code] || "closed"));
  };

  function sendState() {
    var a = local && local.getAudioTracks()[0];
    var v = local && local.getVideoTracks()[0];
    send({type: "state", data: {audio: !!(a && a.enabled), video: !!(v && v.enabled && !audioOnly),
                                mode: audioOnly ? "audio" : "video"}});
  }

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
    var button = this;
    if (!audioOnly) {
      // No renegotiation: the video sender sends nothing, and the camera is released.
      audioOnly = true;
      peers.forEach(function (p) {
        p.pc.getSenders().forEach(function (s) { if (s.track && s.track.kind === "video") { s.replaceTrack(null); } });
      });
      local.getVideoTracks().forEach(function (t) { t.stop(); local.removeTrack(t); });
      $("visit-local").hidden = true;
      button.setAttribute("aria-pressed", "true");
      button.textContent = text("video-again");
    } else {
      var stream = await navigator.mediaDevices.getUserMedia({video: {width: 320, height: 240}});
      var track = stream.getVideoTracks()[0];
      local.addTrack(track);
      audioOnly = false;
      peers.forEach(function (p) {
        p.pc.getTransceivers().forEach(function (t) {
          if (t.receiver.track && t.receiver.track.kind === "video") { t.sender.replaceTrack(track); }
        });
      });
      $("visit-local").hidden = false;
      button.setAttribute("aria-pressed", "false");
      button.textContent = text("audio-only");
    }
    sendState();
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

  // For people and tests alike: what is arriving from each peer right now.
  window.housecallVisit = {
    me: function () { return me; },
    admitted: function () { return admitted; },
    inbound: async function () {
      var out = [];
      for (var entry of peers) {
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

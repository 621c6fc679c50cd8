/* Housecall technology check: camera preview and microphone level, then a short call to the
   server's echo peer through the same TURN configuration a visit uses; the figures come from
   getStats() and the server words the verdict (and keeps it for the care team). */
(function () {
  "use strict";
  var root = document.getElementById("check");
  if (!root) { return; }
  var iceServers = JSON.parse(root.dataset.ice || "[]");
  var csrf = root.dataset.csrf;

  function $(id) { return document.getElementById(id); }
  function text(key) {
    var el = document.querySelector('#check-text [data-key="' + key + '"]');
    return el ? el.textContent : key;
  }
  function status(s) { $("check-status").textContent = s; }
  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

  function post(path, body) {
    return fetch(path, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      body: JSON.stringify(body)
    });
  }

  function meter(stream) {
    try {
      var ctx = new AudioContext();
      var analyser = ctx.createAnalyser();
      ctx.createMediaStreamSource(stream).connect(analyser);
      var data = new Uint8Array(analyser.fftSize);
      setInterval(function () {
        analyser.getByteTimeDomainData(data);
        var peak = 0;
        for (var i = 0; i < data.length; i++) { peak = Math.max(peak, Math.abs(data[i] - 128) / 128); }
        $("check-level").value = peak;
      }, 100);
    } catch (e) { /* no level meter: the call still tells */ }
  }

  async function gathered(pc) {
    if (pc.iceGatheringState === "complete") { return; }
    await new Promise(function (resolve) {
      var done = function () { if (pc.iceGatheringState === "complete") { resolve(); } };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 5000);
    });
  }

  async function measure(pc) {
    var out = {connected: pc.connectionState === "connected", frames: 0};
    var stats = await pc.getStats();
    var pairId = null;
    stats.forEach(function (s) {
      if (s.type === "transport" && s.selectedCandidatePairId) { pairId = s.selectedCandidatePairId; }
    });
    stats.forEach(function (s) {
      if (s.type === "candidate-pair" && (s.id === pairId || (!pairId && s.nominated && s.state === "succeeded"))) {
        if (s.currentRoundTripTime !== undefined) { out.rtt_ms = s.currentRoundTripTime * 1000; }
        if (s.availableOutgoingBitrate !== undefined) { out.bitrate_kbps = s.availableOutgoingBitrate / 1000; }
        var local = stats.get(s.localCandidateId);
        if (local) { out.candidate = local.candidateType; }
      }
      if (s.type === "inbound-rtp" && s.kind === "video") { out.frames += s.framesDecoded || 0; }
      if (s.type === "inbound-rtp" && s.packetsReceived !== undefined) {
        var lost = s.packetsLost || 0;
        var total = s.packetsReceived + lost;
        if (total > 0) { out.loss_pct = Math.max(out.loss_pct || 0, 100 * lost / total); }
      }
    });
    return out;
  }

  async function run() {
    $("check-start").disabled = true;
    $("check-verdict").hidden = true;
    status(text("camera"));
    var stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({audio: true, video: {width: 320, height: 240}});
    } catch (e) {
      status(text("no-media"));
      $("check-start").disabled = false;
      return;
    }
    $("check-preview").srcObject = stream;
    meter(stream);
    status(text("calling"));
    var pc = new RTCPeerConnection({iceServers: iceServers});
    stream.getTracks().forEach(function (t) { pc.addTrack(t, stream); });
    var result = {connected: false};
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      var answer = await post("/visits/check/offer", {type: "offer", sdp: pc.localDescription.sdp});
      if (!answer.ok) { throw new Error("offer refused"); }
      await pc.setRemoteDescription(await answer.json());
      var deadline = Date.now() + 10000;
      while (pc.connectionState !== "connected" && Date.now() < deadline) { await sleep(200); }
      status(text("measuring"));
      var until = Date.now() + 4000;
      while (Date.now() < until) {
        result = await measure(pc);
        if (result.connected && result.frames > 10 && result.rtt_ms !== undefined) { break; }
        await sleep(500);
      }
    } catch (e) {
      result = {connected: false};
    }
    pc.close();
    stream.getTracks().forEach(function (t) { t.stop(); });
    var shown = {rtt: result.rtt_ms, bitrate: result.bitrate_kbps, loss: result.loss_pct};
    $("check-rtt").textContent = shown.rtt !== undefined ? Math.round(shown.rtt) + " ms" : "–";
    $("check-bitrate").textContent = shown.bitrate !== undefined ? Math.round(shown.bitrate) + " kbit/s" : "–";
    $("check-loss").textContent = shown.loss !== undefined ? shown.loss.toFixed(1) + " %" : "–";
    $("check-candidate").textContent = result.candidate || "–";
    $("check-figures").hidden = false;
    var verdict = await post("/visits/check/result", result);
    if (verdict.ok) {
      var v = await verdict.json();
      $("check-verdict").textContent = v.text;
      $("check-verdict").dataset.verdict = v.verdict;
      $("check-verdict").hidden = false;
      status("");
    } else {
      status(text("failed"));
    }
    $("check-start").disabled = false;
  }

  $("check-start").addEventListener("click", run);
})();

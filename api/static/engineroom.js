/*
 * engineroom.js: a small browser client for engineroom's WebSocket ``GET /ws`` (DESIGN.md, "WebSocket GET /ws").
 *
 * A plain script, no module system, no build step, no dependencies: load it with
 * ``<script src="/static/engineroom.js"></script>`` and use ``window.EngineroomClient``.
 *
 *   const client = new EngineroomClient({
 *     token: "<JWT>",                         // or a function returning the current token
 *     topics: ["job:01J..."],                 // besides "mine", which the server subscribes by default
 *     onEvent: (event) => render(event),      // each event exactly once, even across reconnects
 *     onStatus: (status, detail) => show(status),
 *     onError: (error) => console.warn(error),
 *   });
 *   client.connect();
 *
 * What it guarantees the application:
 * - It remembers the id of the newest event it received (``lastEventId``). On every reconnect it subscribes its
 *   topics again and then sends ``{"op": "resume", "after": lastEventId}``, so the server replays what was missed.
 * - Events are deduplicated by id (the last ``dedupeSize`` ids), so a replay overlapping live delivery, or an
 *   event announced twice, reaches ``onEvent`` once.
 * - Reconnects back off exponentially with jitter (0.5 s doubling to 30 s by default); the backoff starts over
 *   once a connection stayed open ``stableAfterMs``.
 * - A refused token (close code 4401, or an HTTP 401 answer to the handshake, which browsers cannot see and which
 *   the client therefore confirms with one authenticated HTTP request) ends in status "unauthorized" and no retry.
 * - A keepalive ``ping`` every ``pingIntervalMs``; a connection that answers nothing within ``pongTimeoutMs``
 *   is dropped and reconnected (a half-open TCP connection would otherwise stay silent forever).
 *
 * Statuses given to ``onStatus``: "connecting", "open", "reconnecting" (detail: {delayMs, attempt, code}),
 * "closed" (after ``close()``), "unauthorized" (detail: {code, reason}).
 */
(function (root) {
  "use strict";

  /** Close code the server uses for a refused token when it cannot answer the handshake with HTTP 401. */
  var CLOSE_UNAUTHORIZED = 4401;
  /** Close code for the application closing the socket itself. */
  var CLOSE_NORMAL = 1000;

  var DEFAULTS = {
    topics: [],
    tokenIn: "subprotocol", // or "query": ``?token=`` (visible in server logs; prefer the subprotocol)
    lastEventId: null, // resume after this id on the first connection too (say, kept in sessionStorage)
    minReconnectDelayMs: 500,
    maxReconnectDelayMs: 30000,
    stableAfterMs: 10000,
    pingIntervalMs: 25000,
    pongTimeoutMs: 10000,
    dedupeSize: 2000,
    authCheckUrl: null, // default: <http(s) origin of url>/jobs?limit=1
  };

  function noop() {}

  function defaultUrl() {
    var location = root.location;
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  }

  /** The REST URL that answers 401 exactly when the token is refused: used after a handshake failed. */
  function defaultAuthCheckUrl(wsUrl) {
    var url = new URL(wsUrl, root.location ? root.location.href : undefined);
    url.protocol = url.protocol === "wss:" ? "https:" : "http:";
    url.pathname = "/jobs";
    url.search = "?limit=1";
    url.hash = "";
    return url.toString();
  }

  /** Whether a frame is an event: its type names a resource and an action ("job.progress") and it has an id. */
  function isEvent(frame) {
    return typeof frame.type === "string" && frame.type.indexOf(".") > 0 && typeof frame.id === "string";
  }

  /** The last ``size`` ids seen, in a Set for lookups and a ring for eviction: memory stays bounded. */
  function RecentIds(size) {
    this.size = Math.max(1, size);
    this.ids = new Set();
    this.ring = [];
    this.next = 0;
  }

  /** True if ``id`` was seen before; remembers it either way. */
  RecentIds.prototype.seen = function (id) {
    if (this.ids.has(id)) return true;
    if (this.ring.length < this.size) {
      this.ring.push(id);
    } else {
      this.ids.delete(this.ring[this.next]);
      this.ring[this.next] = id;
      this.next = (this.next + 1) % this.size;
    }
    this.ids.add(id);
    return false;
  };

  function EngineroomClient(options) {
    options = options || {};
    this.options = {};
    for (var key in DEFAULTS) this.options[key] = options[key] !== undefined ? options[key] : DEFAULTS[key];
    this.url = options.url || defaultUrl();
    this.token = options.token;
    this.onEvent = options.onEvent || noop;
    this.onStatus = options.onStatus || noop;
    this.onError = options.onError || noop;
    this.onControl = options.onControl || noop; // hello, subscribed, unsubscribed, resumed, pong frames
    /** The id of the newest event received; resumes start after it. */
    this.lastEventId = this.options.lastEventId;
    /** "idle", then the statuses given to onStatus. */
    this.status = "idle";
    // "mine" is subscribed by the server on every connection; the client only says when it is not wanted.
    this._topics = new Set(["mine"].concat(this.options.topics));
    this._recent = new RecentIds(this.options.dedupeSize);
    this._socket = null;
    this._attempt = 0;
    this._stopped = true;
    this._opened = false; // whether the current socket ever opened
    this._openedAt = 0;
    this._timers = { reconnect: null, ping: null, pong: null };
  }

  /** Open the connection (again, after ``close()``). */
  EngineroomClient.prototype.connect = function () {
    this._stopped = false;
    this._attempt = 0;
    this._open("connecting");
    return this;
  };

  /** Close for good: no reconnect until ``connect()`` is called again. */
  EngineroomClient.prototype.close = function () {
    this._stopped = true;
    this._clearTimers();
    var socket = this._socket;
    this._socket = null;
    if (socket) {
      this._detach(socket);
      if (socket.readyState === socket.CONNECTING || socket.readyState === socket.OPEN) {
        socket.close(CLOSE_NORMAL, "client closed");
      }
    }
    this._setStatus("closed");
  };

  /** Add topics ("job:<id>", "workflow:<id>", "notifications", "queue:<engine>"); kept across reconnects. */
  EngineroomClient.prototype.subscribe = function (topics) {
    topics = [].concat(topics);
    var self = this;
    topics.forEach(function (topic) {
      self._topics.add(topic);
    });
    if (this.status === "open") this._send({ op: "subscribe", topics: topics });
  };

  /** Remove topics; kept removed across reconnects (for "mine" too). */
  EngineroomClient.prototype.unsubscribe = function (topics) {
    topics = [].concat(topics);
    var self = this;
    topics.forEach(function (topic) {
      self._topics.delete(topic);
    });
    if (this.status === "open") this._send({ op: "unsubscribe", topics: topics });
  };

  /** The topics the client keeps subscribed. */
  EngineroomClient.prototype.topics = function () {
    return Array.from(this._topics);
  };

  EngineroomClient.prototype._currentToken = function () {
    return typeof this.token === "function" ? this.token() : this.token;
  };

  EngineroomClient.prototype._open = function (status) {
    this._clearTimers();
    this._setStatus(status);
    var token = this._currentToken();
    var url = this.url;
    var protocols;
    if (this.options.tokenIn === "query") {
      url += (url.indexOf("?") < 0 ? "?" : "&") + "token=" + encodeURIComponent(token);
    } else {
      protocols = ["bearer", token];
    }
    var socket;
    try {
      socket = protocols ? new root.WebSocket(url, protocols) : new root.WebSocket(url);
    } catch (error) {
      // A malformed URL or a token that is not a valid subprotocol token: retrying cannot help.
      this._report({ type: "client", detail: String(error) });
      this._stopped = true;
      this._setStatus("closed");
      return;
    }
    this._socket = socket;
    this._opened = false;
    var self = this;
    socket.onopen = function () {
      self._opened = true;
      self._openedAt = Date.now();
    };
    socket.onmessage = function (message) {
      self._receive(message.data);
    };
    socket.onclose = function (close) {
      self._closed(socket, close);
    };
    socket.onerror = noop; // onclose follows with what can be known
  };

  EngineroomClient.prototype._detach = function (socket) {
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
  };

  EngineroomClient.prototype._receive = function (data) {
    var frame;
    try {
      frame = JSON.parse(data);
    } catch (error) {
      this._report({ type: "client", detail: "a frame that is not JSON: " + String(data).slice(0, 200) });
      return;
    }
    if (!frame || typeof frame !== "object") return;
    this._alive();
    if (isEvent(frame)) {
      this._event(frame);
      return;
    }
    if (frame.type === "hello") this._hello(frame);
    else if (frame.type === "error") this._report(frame);
    this._notify(this.onControl, frame);
  };

  /** The connection is authenticated: subscribe the topics again, resume, then hand over live events. */
  EngineroomClient.prototype._hello = function (frame) {
    var extra = [];
    this._topics.forEach(function (topic) {
      if (topic !== "mine") extra.push(topic);
    });
    if (extra.length) this._send({ op: "subscribe", topics: extra });
    if (!this._topics.has("mine")) this._send({ op: "unsubscribe", topics: ["mine"] });
    if (this.lastEventId !== null && this.lastEventId !== undefined) {
      this._send({ op: "resume", after: this.lastEventId });
    } else if (frame.last_event_id) {
      // Nothing received yet: everything after the server's newest event at connect time is live from here,
      // so a connection lost before the first event resumes from there instead of missing what came between.
      this.lastEventId = frame.last_event_id;
    }
    this._schedulePing();
    this._setStatus("open");
  };

  EngineroomClient.prototype._event = function (event) {
    if (this._recent.seen(event.id)) return;
    // Ids sort by time as strings; keep the newest so a resume never asks again for what arrived.
    if (this.lastEventId === null || this.lastEventId === undefined || event.id > this.lastEventId) {
      this.lastEventId = event.id;
    }
    this._notify(this.onEvent, event);
  };

  EngineroomClient.prototype._closed = function (socket, close) {
    if (socket !== this._socket) return; // an older socket, already replaced
    this._detach(socket);
    this._socket = null;
    this._clearTimers();
    if (this._stopped) return;
    var detail = { code: close.code, reason: close.reason };
    if (close.code === CLOSE_UNAUTHORIZED) {
      this._unauthorized(detail);
      return;
    }
    if (!this._opened) {
      // Never opened: the server is down, or it answered the handshake with an HTTP error that browsers hide
      // (every failed handshake is close code 1006). Ask once over HTTP whether it is the token.
      this._checkToken(detail);
      return;
    }
    this._reconnect(detail);
  };

  EngineroomClient.prototype._checkToken = function (detail) {
    var self = this;
    var token = this._currentToken();
    var url = this.options.authCheckUrl || defaultAuthCheckUrl(this.url);
    if (typeof root.fetch !== "function") {
      this._reconnect(detail);
      return;
    }
    root
      .fetch(url, { headers: { Authorization: "Bearer " + token }, cache: "no-store" })
      .then(
        function (response) {
          return response.status === 401;
        },
        function () {
          return false; // unreachable: the server is down, retry
        }
      )
      .then(function (refused) {
        if (self._stopped || self._socket) return;
        if (refused) self._unauthorized(detail);
        else self._reconnect(detail);
      });
  };

  EngineroomClient.prototype._unauthorized = function (detail) {
    this._stopped = true;
    this._report({ type: "unauthorized", detail: "the server refused the token", code: detail.code });
    this._setStatus("unauthorized", detail);
  };

  EngineroomClient.prototype._reconnect = function (detail) {
    // A connection that stayed open long enough proves the server healthy: the backoff starts over.
    if (this._opened && Date.now() - this._openedAt >= this.options.stableAfterMs) this._attempt = 0;
    var ceiling = Math.min(
      this.options.maxReconnectDelayMs,
      this.options.minReconnectDelayMs * Math.pow(2, this._attempt)
    );
    // "Equal jitter": at least half the ceiling, so clients that lost the same gateway spread out without any
    // of them retrying at once.
    var delayMs = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    this._attempt += 1;
    this._setStatus("reconnecting", { delayMs: delayMs, attempt: this._attempt, code: detail.code });
    var self = this;
    this._timers.reconnect = setTimeout(function () {
      self._timers.reconnect = null;
      if (!self._stopped) self._open("connecting");
    }, delayMs);
  };

  EngineroomClient.prototype._schedulePing = function () {
    var self = this;
    clearInterval(this._timers.ping);
    this._timers.ping = setInterval(function () {
      if (!self._send({ op: "ping" })) return;
      if (self._timers.pong === null) {
        self._timers.pong = setTimeout(function () {
          self._timers.pong = null;
          // Silence after a ping: the connection is gone without a close frame. Drop it and reconnect.
          var socket = self._socket;
          if (socket) {
            self._detach(socket);
            self._socket = null;
            socket.close(CLOSE_NORMAL, "no answer to ping");
            self._clearTimers();
            self._reconnect({ code: null, reason: "no answer to ping" });
          }
        }, self.options.pongTimeoutMs);
      }
    }, this.options.pingIntervalMs);
  };

  /** Any frame proves the connection alive. */
  EngineroomClient.prototype._alive = function () {
    clearTimeout(this._timers.pong);
    this._timers.pong = null;
  };

  EngineroomClient.prototype._clearTimers = function () {
    clearTimeout(this._timers.reconnect);
    clearInterval(this._timers.ping);
    clearTimeout(this._timers.pong);
    this._timers = { reconnect: null, ping: null, pong: null };
  };

  EngineroomClient.prototype._send = function (frame) {
    var socket = this._socket;
    if (!socket || socket.readyState !== socket.OPEN) return false;
    socket.send(JSON.stringify(frame));
    return true;
  };

  EngineroomClient.prototype._setStatus = function (status, detail) {
    this.status = status;
    this._notify(this.onStatus, status, detail);
  };

  EngineroomClient.prototype._report = function (error) {
    this._notify(this.onError, error);
  };

  /** Call an application callback; its exception is logged, never allowed to break the connection. */
  EngineroomClient.prototype._notify = function (callback) {
    try {
      callback.apply(null, Array.prototype.slice.call(arguments, 1));
    } catch (error) {
      if (root.console) root.console.error("engineroom.js: a callback failed", error);
    }
  };

  EngineroomClient.CLOSE_UNAUTHORIZED = CLOSE_UNAUTHORIZED;
  root.EngineroomClient = EngineroomClient;
})(typeof window !== "undefined" ? window : globalThis);

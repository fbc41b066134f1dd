"""A real RTSP server on 127.0.0.1 for the stream tests: GStreamer's RTSP server (Debian packages
gir1.2-gst-rtsp-server-1.0, python3-gst-1.0, gstreamer1.0-plugins-good) serving a live test
pattern as RTP/JPEG at rtsp://127.0.0.1:PORT/cam. It runs under the system Python, which has the
GObject bindings, and prints "ready" once it listens.

    /usr/bin/python3 tests/rtsp_server.py PORT WIDTH HEIGHT FPS
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

Gst.init(None)
port, width, height, fps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
server = GstRtspServer.RTSPServer.new()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory.new()
# RTP/JPEG carries 4:2:0 only, hence I420.
factory.set_launch(f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},"
                   f"framerate={fps}/1,format=I420 ! jpegenc quality=90 ! rtpjpegpay name=pay0 pt=26 )")
factory.set_shared(True)
server.get_mount_points().add_factory("/cam", factory)
if server.attach(None) == 0:
    sys.exit(f"cannot listen on 127.0.0.1:{port}")
print("ready", flush=True)
GLib.MainLoop().run()

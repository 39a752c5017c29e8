"""The face-vid2vid family (AnyTalk's own network): model, configuration inference and released-file reader."""
from .config import default_config, infer_face_vid2vid
from .model import FaceVid2VidModel
from .reader import map_face_vid2vid, read_face_vid2vid

__all__ = ["FaceVid2VidModel", "default_config", "infer_face_vid2vid", "map_face_vid2vid", "read_face_vid2vid"]

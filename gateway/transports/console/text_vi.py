"""Từ ngữ của bảng điều khiển bằng tiếng Việt (cùng khóa với :mod:`.text_en`). ``{name}`` được điền vào."""

TEXT = {
    # khung trang và đăng nhập
    "sign_in": "Đăng nhập", "sign_out": "Đăng xuất", "admin_token": "Mã quản trị",
    "login_token_intro": "Đăng nhập bằng mã quản trị: giá trị của biến môi trường mà auth.admin_token_env chỉ định.",
    "login_loopback_intro": "Chưa cấu hình mã quản trị (auth.admin_token_env): bảng điều khiển chỉ phục vụ chính máy "
                            "này.",
    "login_csrf_refused": "Biểu mẫu đăng nhập đã hết hạn hoặc đến từ trang khác; hãy đăng nhập lại.",
    "csrf_refused": "Biểu mẫu không mang mã bảo mật (CSRF) của phiên này; không có gì được thực hiện. Hãy tải lại "
                    "trang và thử lại.",
    "refused": "Bị từ chối", "error": "Lỗi", "not_found": "Không có trang này", "too_large": "Biểu mẫu quá lớn.",
    # nơi nhận
    "destinations": "Nơi nhận", "destination": "Nơi nhận", "kind": "Loại", "state": "Trạng thái",
    "depth": "Đang chờ", "dead": "Hỏng", "delivered": "Đã gửi", "oldest_age": "Chờ lâu nhất",
    "circuit": "Mạch", "in_flight": "Đang gửi", "action": "Thao tác", "paused": "tạm dừng", "running": "đang chạy",
    "pause": "Tạm dừng", "resume": "Tiếp tục",
    "destinations_intro": "Tổng cộng {pending} bản ghi đang chờ gửi.",
    "paused_done": "{destination} đã tạm dừng: không bắt đầu lượt gửi mới (lượt đang gửi sẽ hoàn tất).",
    "resumed_done": "{destination} gửi lại bình thường.",
    # thông điệp
    "messages": "Thông điệp", "search": "Tìm", "any": "tất cả", "control_id": "Mã kiểm soát", "facility": "Cơ sở",
    "sender": "Nơi gửi", "status": "Trạng thái", "message_type": "Loại", "since": "Từ", "until": "Đến",
    "person": "Người bệnh (mã hoặc số định danh)", "id": "Mã", "received": "Nhận lúc", "ack": "ACK", "errors": "Lỗi",
    "no_messages": "Không có thông điệp nào khớp.",
    "newest_only": "{count} thông điệp mới nhất khớp; thu hẹp điều kiện tìm để xem các thông điệp cũ hơn.",
    "message_n": "Thông điệp {id}", "acks_sent": "ACK đã gửi",
    "transport": "Kênh", "client": "Máy khách", "plugin": "Plugin", "size": "Kích thước", "bytes": "{count} byte",
    "location": "Vị trí", "code": "Mã lỗi", "text": "Nội dung", "no_errors": "Không có lỗi.",
    "not_routed": "Không chuyển", "attempts": "Các lần xử lý", "outbox_rows": "Lượt chuyển", "row": "Dòng",
    "tries": "Số lần gửi", "person_id": "Người",
    "last_result": "Kết quả gần nhất", "last_error": "Lỗi gần nhất", "next_attempt": "Lần thử tới",
    "delivered_at": "Đã gửi lúc", "no_outbox_rows": "Không có gì được xếp hàng để gửi.", "retry": "Gửi lại",
    "replay": "Xử lý lại", "show_body": "Xem nội dung", "body": "Nội dung",
    "body_read_logged": "Mỗi lần xem nội dung đều được ghi lại: ai xem và lúc nào.",
    "status_accepted": "được chấp nhận", "status_error": "lỗi", "status_rejected": "bị từ chối",
    "status_ignored": "bỏ qua",
    "state_pending": "chờ gửi", "state_waiting": "chờ lượt", "state_in_flight": "đang gửi",
    "state_delivered": "đã gửi", "state_dead": "hỏng",
    "replayed_one": "Đã xử lý lại thông điệp {id}: trước {was}, nay {now}; lần xử lý mới {new}, {queued} bản ghi "
                    "được xếp hàng.",
    "replay_skipped": "Thông điệp {id} không được xử lý lại: {reason}",
    # thư hỏng và xử lý lại lỗi
    "dead_letters": "Thư hỏng", "message": "Thông điệp", "updated": "Cập nhật",
    "no_dead_letters": "Không có thư hỏng.",
    "retried_done": "Dòng {row} đã chờ gửi lại.",
    "replay_errors": "Xử lý lại thông điệp lỗi",
    "replay_errors_intro": "Quyết định lại các thông điệp đã bị trả lỗi hoặc từ chối, nhận trong khoảng thời gian này "
                           "(sau khi sửa plugin hoặc cấu hình).",
    "replayed_count": "Đã xử lý lại {count} thông điệp.", "more": "Còn thông điệp khớp: hãy chạy lại.",
    "was": "Trước", "now": "Nay", "new_message": "Lần xử lý mới", "queued": "Xếp hàng", "note": "Ghi chú",
    # rà soát định danh
    "reviews": "Rà soát định danh", "no_reviews": "Không có trường hợp nào chờ rà soát.",
    "review_n": "Rà soát {id}: {reason}", "opened": "Mở lúc {when}", "role": "Vai trò", "name": "Họ tên",
    "birth_date": "Ngày sinh", "person_status": "Tình trạng", "subject": "đối tượng", "candidate": "ứng viên",
    "accept": "Chấp nhận", "reject": "Bác bỏ",
    "accepted_done": "Đã chấp nhận rà soát {id}: liên kết với {chosen}.", "rejected_done": "Đã bác bỏ rà soát {id}.",
    "reason_twins_without_birth_order": "trẻ sinh đôi không có thứ tự sinh",
    "reason_two_candidates": "hai ứng viên",
    "reason_mother_identifiers_changed": "người mẹ được nêu bằng số định danh chỉ mục chưa biết",
    "person_identified": "đã định danh", "person_provisional": "tạm thời", "person_replaced": "đã gộp",
    "person_unknown": "không rõ",
}

!> smoothflow.f90 -- Fortran bindings of the SmoothFlow C core (core/include/smoothflow.h).
!>
!> Fortran 2008 with iso_c_binding; compile this file with your program and link
!> libsmoothflow (-lsmoothflow, or CMake target smoothflow::smoothflow).  The C
!> functions are bound privately; the public interface is:
!>
!>   type(sf_model)      a loaded model (immutable; may be shared by threads)
!>   type(sf_workspace)  scratch memory of evaluations (one per thread)
!>   type(sf_error)      the C struct sf_error: code, message, molecule, atoms
!>   sf_load(model, path, err)                       -> status
!>   sf_new_workspace(ws, model, max_batch, err)     -> status
!>   sf_evaluate(model, ws, positions, energy, forces, box, wall_dims, err) -> status
!>       positions(3, N) and energy (one molecule), or positions(3, N, B) and
!>       energies(B) (a batch); forces of the same shape as positions (optional);
!>       box(3, 3) with box(:, k) the k-th box vector (optional: non-periodic)
!>   sf_free(model), sf_free(ws)
!>   sf_num_atoms, sf_num_dims, sf_temperature, sf_kT, sf_energy_offset (model facts)
!>   sf_message(err), sf_status_text(code)           the error's text
!>   sf_library_version(), sf_library_version_number(), sf_library_compatible()
!>       the loaded library's version (the parameters SF_VERSION_* are these bindings')
!>
!> Units: nm, kJ/mol, kJ/mol/nm.  Atoms in the model's atom order.  Status values
!> are the C enum sf_status (SF_OK = 0, ...).  Indices in sf_error (molecule,
!> atoms) are the C core's, counted from 0.  docs/engine-api.md has the contract.
module smoothflow
    use, intrinsic :: iso_c_binding, only: c_int, c_double, c_char, c_size_t, c_ptr, c_null_ptr, &
        c_null_char, c_associated, c_loc, c_f_pointer
    implicit none
    private

    ! Version of the header these bindings mirror; wrappers/CMakeLists.txt checks that it
    ! equals project(VERSION) and smoothflow.h.
    integer, parameter, public :: SF_VERSION_MAJOR = 0
    integer, parameter, public :: SF_VERSION_MINOR = 1
    integer, parameter, public :: SF_VERSION_PATCH = 0
    integer, parameter, public :: SF_VERSION_NUMBER = &
        SF_VERSION_MAJOR * 10000 + SF_VERSION_MINOR * 100 + SF_VERSION_PATCH

    ! enum sf_status (tests/python/test_engine_wrappers.py compares these with the header)
    integer(c_int), parameter, public :: SF_OK = 0
    integer(c_int), parameter, public :: SF_ERR_ARG = 1
    integer(c_int), parameter, public :: SF_ERR_NOMEM = 2
    integer(c_int), parameter, public :: SF_ERR_IO = 3
    integer(c_int), parameter, public :: SF_ERR_FORMAT = 4
    integer(c_int), parameter, public :: SF_ERR_VERSION = 5
    integer(c_int), parameter, public :: SF_ERR_MODEL = 6
    integer(c_int), parameter, public :: SF_ERR_VALUE = 7
    integer(c_int), parameter, public :: SF_ERR_INPUT = 8
    integer(c_int), parameter, public :: SF_ERR_SUPPORT = 9
    integer(c_int), parameter, public :: SF_ERR_GEOMETRY = 10
    integer(c_int), parameter, public :: SF_ERR_NUMERIC = 11

    integer, parameter, public :: SF_ERROR_MESSAGE_SIZE = 512

    !> struct sf_error: the status, a NUL-terminated message, and for evaluation errors the
    !> molecule's index in the batch and up to four model atoms (-1 where not applicable).
    type, bind(c), public :: sf_error
        integer(c_int) :: code
        character(kind=c_char) :: message(SF_ERROR_MESSAGE_SIZE)
        integer(c_int) :: molecule
        integer(c_int) :: atoms(4)
    end type sf_error

    type, public :: sf_model
        type(c_ptr) :: handle = c_null_ptr
    end type sf_model

    type, public :: sf_workspace
        type(c_ptr) :: handle = c_null_ptr
        integer :: max_batch = 0
    end type sf_workspace

    public :: sf_load, sf_new_workspace, sf_evaluate, sf_free
    public :: sf_num_atoms, sf_num_dims, sf_temperature, sf_kT, sf_energy_offset
    public :: sf_message, sf_status_text, sf_library_version, sf_library_version_number, sf_library_compatible

    !> sf_evaluate(model, ws, positions, energy[, forces, box, wall_dims, err]):
    !> one molecule (positions(3, N), energy scalar) or a batch (positions(3, N, B), energies(B)).
    interface sf_evaluate
        module procedure evaluate_one, evaluate_batch
    end interface sf_evaluate

    interface sf_free
        module procedure free_model, free_workspace
    end interface sf_free

    ! struct sf_eval_info
    type, bind(c) :: c_eval_info
        integer(c_int) :: wall_dims
        integer(c_int) :: max_newton_iters
    end type c_eval_info

    ! The C functions (smoothflow.h), private: the procedures below wrap them.
    interface
        function c_model_load_file(path, model, err) bind(c, name='sf_model_load_file') result(status)
            import :: c_char, c_ptr, c_int, sf_error
            character(kind=c_char), intent(in) :: path(*)
            type(c_ptr), intent(out) :: model
            type(sf_error), intent(inout) :: err  ! written on failure only
            integer(c_int) :: status
        end function
        subroutine c_model_free(model) bind(c, name='sf_model_free')
            import :: c_ptr
            type(c_ptr), value :: model
        end subroutine
        function c_workspace_new(model, max_batch, ws, err) bind(c, name='sf_workspace_new') result(status)
            import :: c_ptr, c_int, sf_error
            type(c_ptr), value :: model
            integer(c_int), value :: max_batch
            type(c_ptr), intent(out) :: ws
            type(sf_error), intent(inout) :: err  ! written on failure only
            integer(c_int) :: status
        end function
        subroutine c_workspace_free(ws) bind(c, name='sf_workspace_free')
            import :: c_ptr
            type(c_ptr), value :: ws
        end subroutine
        function c_evaluate(model, ws, batch, positions, box, energies, forces, info, err) &
                bind(c, name='sf_evaluate') result(status)
            import :: c_ptr, c_int, sf_error
            type(c_ptr), value :: model, ws
            integer(c_int), value :: batch
            type(c_ptr), value :: positions, box, energies, forces, info
            type(sf_error), intent(inout) :: err  ! written on failure only
            integer(c_int) :: status
        end function
        integer(c_int) function c_model_num_atoms(model) bind(c, name='sf_model_num_atoms')
            import :: c_ptr, c_int
            type(c_ptr), value :: model
        end function
        integer(c_int) function c_model_num_dims(model) bind(c, name='sf_model_num_dims')
            import :: c_ptr, c_int
            type(c_ptr), value :: model
        end function
        real(c_double) function c_model_temperature(model) bind(c, name='sf_model_temperature')
            import :: c_ptr, c_double
            type(c_ptr), value :: model
        end function
        real(c_double) function c_model_kT(model) bind(c, name='sf_model_kT')
            import :: c_ptr, c_double
            type(c_ptr), value :: model
        end function
        real(c_double) function c_model_energy_offset(model) bind(c, name='sf_model_energy_offset')
            import :: c_ptr, c_double
            type(c_ptr), value :: model
        end function
        type(c_ptr) function c_status_string(code) bind(c, name='sf_status_string')
            import :: c_ptr, c_int
            integer(c_int), value :: code
        end function
        type(c_ptr) function c_version() bind(c, name='sf_version')
            import :: c_ptr
        end function
        integer(c_int) function c_version_number() bind(c, name='sf_version_number')
            import :: c_int
        end function
        integer(c_size_t) function c_strlen(s) bind(c, name='strlen')
            import :: c_ptr, c_size_t
            type(c_ptr), value :: s
        end function
    end interface

contains

    ! ------------------------------------------------------------------ strings

    !> A Fortran string from a NUL-terminated C string (static or owned by the core).
    function from_c_string(p) result(s)
        type(c_ptr), intent(in) :: p
        character(len=:), allocatable :: s
        character(kind=c_char), pointer :: chars(:)
        integer :: i, n
        if (.not. c_associated(p)) then
            s = ''
            return
        end if
        n = int(c_strlen(p))
        call c_f_pointer(p, chars, [n])
        allocate(character(len=n) :: s)
        do i = 1, n
            s(i:i) = chars(i)
        end do
    end function from_c_string

    function to_c_string(s) result(c)
        character(len=*), intent(in) :: s
        character(kind=c_char, len=len(s) + 1) :: c
        c = s // c_null_char
    end function to_c_string

    !> The message of an error, without trailing NUL.
    function sf_message(err) result(msg)
        type(sf_error), intent(in) :: err
        character(len=:), allocatable :: msg
        integer :: i, n
        n = 0
        do i = 1, SF_ERROR_MESSAGE_SIZE
            if (err%message(i) == c_null_char) exit
            n = i
        end do
        allocate(character(len=n) :: msg)
        do i = 1, n
            msg(i:i) = err%message(i)
        end do
    end function sf_message

    !> A short static description of a status code.
    function sf_status_text(code) result(text)
        integer(c_int), intent(in) :: code
        character(len=:), allocatable :: text
        text = from_c_string(c_status_string(code))
    end function sf_status_text

    !> Fills err for a failure found on the Fortran side, as the core fills it.
    subroutine set_error(err, code, text)
        type(sf_error), intent(out) :: err
        integer(c_int), intent(in) :: code
        character(len=*), intent(in) :: text
        integer :: i, n
        err%code = code
        err%molecule = -1
        err%atoms = -1
        err%message = c_null_char
        n = min(len(text), SF_ERROR_MESSAGE_SIZE - 1)
        do i = 1, n
            err%message(i) = text(i:i)
        end do
    end subroutine set_error

    ! ------------------------------------------------------------------ version

    !> The loaded library's version, "major.minor.patch".
    function sf_library_version() result(v)
        character(len=:), allocatable :: v
        v = from_c_string(c_version())
    end function sf_library_version

    !> The loaded library's version as major * 10000 + minor * 100 + patch.
    integer function sf_library_version_number()
        sf_library_version_number = int(c_version_number())
    end function sf_library_version_number

    !> Whether the loaded library has the ABI of these bindings: the same major.minor while
    !> the major version is 0, the same major version from 1.0 on (docs/engine-api.md).
    logical function sf_library_compatible()
        integer, parameter :: abi_unit = merge(100, 10000, SF_VERSION_MAJOR == 0)
        sf_library_compatible = sf_library_version_number() / abi_unit == SF_VERSION_NUMBER / abi_unit
    end function sf_library_compatible

    ! -------------------------------------------------------------------- model

    !> Loads a model file; on failure model stays unloaded and err says why.
    function sf_load(model, path, err) result(status)
        type(sf_model), intent(inout) :: model
        character(len=*), intent(in) :: path
        type(sf_error), intent(out), optional :: err
        integer(c_int) :: status
        type(sf_error) :: e
        type(c_ptr) :: handle
        call set_error(e, SF_OK, '')
        call free_model(model)
        status = c_model_load_file(to_c_string(path), handle, e)
        if (status == SF_OK) model%handle = handle
        if (present(err)) err = e
    end function sf_load

    subroutine free_model(model)
        type(sf_model), intent(inout) :: model
        call c_model_free(model%handle)
        model%handle = c_null_ptr
    end subroutine free_model

    integer function sf_num_atoms(model)
        type(sf_model), intent(in) :: model
        sf_num_atoms = 0
        if (c_associated(model%handle)) sf_num_atoms = int(c_model_num_atoms(model%handle))
    end function sf_num_atoms

    integer function sf_num_dims(model)
        type(sf_model), intent(in) :: model
        sf_num_dims = 0
        if (c_associated(model%handle)) sf_num_dims = int(c_model_num_dims(model%handle))
    end function sf_num_dims

    !> The model's temperature (K); 0 for a model not loaded.
    real(c_double) function sf_temperature(model)
        type(sf_model), intent(in) :: model
        sf_temperature = 0
        if (c_associated(model%handle)) sf_temperature = c_model_temperature(model%handle)
    end function sf_temperature

    !> kT of the model's temperature (kJ/mol); 0 for a model not loaded.
    real(c_double) function sf_kT(model)
        type(sf_model), intent(in) :: model
        sf_kT = 0
        if (c_associated(model%handle)) sf_kT = c_model_kT(model%handle)
    end function sf_kT

    !> The model's energy offset U0 (kJ/mol); 0 for a model not loaded.
    real(c_double) function sf_energy_offset(model)
        type(sf_model), intent(in) :: model
        sf_energy_offset = 0
        if (c_associated(model%handle)) sf_energy_offset = c_model_energy_offset(model%handle)
    end function sf_energy_offset

    ! ---------------------------------------------------------------- workspace

    !> A workspace for batches of up to max_batch molecules of this model.
    function sf_new_workspace(ws, model, max_batch, err) result(status)
        type(sf_workspace), intent(inout) :: ws
        type(sf_model), intent(in) :: model
        integer, intent(in) :: max_batch
        type(sf_error), intent(out), optional :: err
        integer(c_int) :: status
        type(sf_error) :: e
        type(c_ptr) :: handle
        call set_error(e, SF_OK, '')
        call free_workspace(ws)
        if (.not. c_associated(model%handle)) then
            call set_error(e, SF_ERR_ARG, 'sf_new_workspace: the model is not loaded')
            status = e%code
        else
            status = c_workspace_new(model%handle, int(max_batch, c_int), handle, e)
            if (status == SF_OK) then
                ws%handle = handle
                ws%max_batch = max_batch
            end if
        end if
        if (present(err)) err = e
    end function sf_new_workspace

    subroutine free_workspace(ws)
        type(sf_workspace), intent(inout) :: ws
        call c_workspace_free(ws%handle)
        ws%handle = c_null_ptr
        ws%max_batch = 0
    end subroutine free_workspace

    ! --------------------------------------------------------------- evaluation

    !> Energies (kJ/mol) and optionally forces (kJ/mol/nm) of a batch:
    !> positions(3, N, B) in nm, energies(B), forces(3, N, B); box(:, k) the k-th box vector.
    function evaluate_batch(model, ws, positions, energies, forces, box, wall_dims, err) result(status)
        type(sf_model), intent(in) :: model
        type(sf_workspace), intent(inout) :: ws
        real(c_double), intent(in), target, contiguous :: positions(:, :, :)
        real(c_double), intent(out), target, contiguous :: energies(:)
        real(c_double), intent(out), target, contiguous, optional :: forces(:, :, :)
        real(c_double), intent(in), target, optional :: box(3, 3)
        integer, intent(out), optional :: wall_dims
        type(sf_error), intent(out), optional :: err
        integer(c_int) :: status
        type(sf_error) :: e
        type(c_eval_info), target :: info
        type(c_ptr) :: forces_ptr, box_ptr
        character(len=160) :: text
        integer :: n, batch

        call set_error(e, SF_OK, '')
        batch = size(energies)
        n = sf_num_atoms(model)
        status = SF_ERR_ARG
        if (.not. c_associated(model%handle)) then
            call set_error(e, status, 'sf_evaluate: the model is not loaded')
        else if (.not. c_associated(ws%handle)) then
            call set_error(e, status, 'sf_evaluate: the workspace was not made (sf_new_workspace)')
        else if (size(positions, 1) /= 3 .or. size(positions, 2) /= n .or. size(positions, 3) /= batch) then
            write (text, '(a,i0,a,i0,a,3(i0,a))') 'sf_evaluate: positions must have the shape (3, ', n, ', ', &
                batch, ') (3, model atoms, molecules), not (', size(positions, 1), ', ', size(positions, 2), &
                ', ', size(positions, 3), ')'
            call set_error(e, status, trim(text))
        else if (batch < 1 .or. batch > ws%max_batch) then
            write (text, '(a,i0,a,i0)') 'sf_evaluate: a batch of ', batch, &
                ' molecules; the workspace holds 1 to ', ws%max_batch
            call set_error(e, status, trim(text))
        else
            status = SF_OK
            forces_ptr = c_null_ptr
            if (present(forces)) then
                if (any(shape(forces) /= shape(positions))) then
                    status = SF_ERR_ARG
                    call set_error(e, status, 'sf_evaluate: forces must have the shape of positions')
                else
                    forces_ptr = c_loc(forces)
                end if
            end if
            box_ptr = c_null_ptr
            if (present(box)) box_ptr = c_loc(box)
            if (status == SF_OK) status = c_evaluate(model%handle, ws%handle, int(batch, c_int), &
                c_loc(positions), box_ptr, c_loc(energies), forces_ptr, c_loc(info), e)
        end if
        if (present(wall_dims)) then
            wall_dims = 0
            if (status == SF_OK) wall_dims = int(info%wall_dims)
        end if
        if (present(err)) err = e
    end function evaluate_batch

    !> One molecule: positions(3, N) in nm, its energy, forces(3, N).
    function evaluate_one(model, ws, positions, energy, forces, box, wall_dims, err) result(status)
        type(sf_model), intent(in) :: model
        type(sf_workspace), intent(inout) :: ws
        real(c_double), intent(in), target, contiguous :: positions(:, :)
        real(c_double), intent(out) :: energy
        real(c_double), intent(out), target, contiguous, optional :: forces(:, :)
        real(c_double), intent(in), optional :: box(3, 3)
        integer, intent(out), optional :: wall_dims
        type(sf_error), intent(out), optional :: err
        integer(c_int) :: status
        real(c_double), pointer :: p3(:, :, :), f3(:, :, :)
        real(c_double) :: energies(1)

        energies = 0
        ! the same memory seen as a batch of one (no copy)
        call c_f_pointer(c_loc(positions), p3, [size(positions, 1), size(positions, 2), 1])
        if (present(forces)) then
            if (any(shape(forces) /= shape(positions))) then
                status = SF_ERR_ARG
                if (present(err)) call set_error(err, status, 'sf_evaluate: forces must have the shape of positions')
                return
            end if
            call c_f_pointer(c_loc(forces), f3, [size(forces, 1), size(forces, 2), 1])
            status = evaluate_batch(model, ws, p3, energies, f3, box, wall_dims, err)
        else
            status = evaluate_batch(model, ws, p3, energies, box=box, wall_dims=wall_dims, err=err)
        end if
        energy = energies(1)
    end function evaluate_one

end module smoothflow
